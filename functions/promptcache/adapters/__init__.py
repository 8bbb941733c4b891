"""One module per backend. Each takes its client or connection from the caller."""
