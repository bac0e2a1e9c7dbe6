"""Domain values and tables: what the data is."""
