"""One ``pulumi.ComponentResource`` per concern, each configured by a frozen dataclass."""
