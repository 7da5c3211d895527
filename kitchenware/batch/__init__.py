"""Offline scoring of many images: a folder, a glob, a file list or Kaggle's test.csv in,
a submission CSV (or JSON lines) out. Two engines share the inputs, decoding and output:
`local` (parallel decoding overlapped with batched inference in one process) and `ray`
(Ray Data with an actor pool, for a cluster)."""
