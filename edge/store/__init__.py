"""Where objects live: keys, the store a bucket's objects are kept in, and the edge's state.

This package owns every byte of object data on disk: key validation, the folder store
(one folder per bucket under `data_dir`), pending writes that are published create-only,
per-key locks, multipart parts, and the small state files under `.cosedge/` (API-made
buckets, origin rules, change stamps) that every worker process shares. Nothing outside
it opens object files; the web layer, the API and the copier ask the store.
"""
