"""What a host looks like to opskit: the /opt/<project> layout, the labels on its containers,
the deploy lock and the audit log."""
