"""The WebDAV share (wsgidav + cheroot): the engine's trees over HTTP."""
