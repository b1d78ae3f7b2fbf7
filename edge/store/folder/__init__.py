"""The folder store, the embedded default: each bucket a plain folder under `data_dir`.

Objects are files at their keys, so an operator can drop files in and rsync or nginx can
read them; the edge's own bookkeeping (temp files, metadata records, locks, tombstones,
multipart parts) lives under `<data_dir>/.cosedge/` on the same filesystem, which is what
makes publishing by `link(2)` atomic and create-only.
"""
