"""The image pool: block-addressable disk-image backups on the engine."""
