"""Everything that knows how a market directory (and a package file) is laid out."""
