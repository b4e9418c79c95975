"""The run directory's checkpoint format: names, state (de)serialisation, checks, the finder,
reading and writing."""
