"""The FUSE mount (pyfuse3 + trio): the engine's trees as a filesystem."""
