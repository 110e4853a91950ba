"""A prepared MLM corpus: tokenized once, packed into windows, stored as shards that training
opens in constant time and reads row by row.

Layout of a prepared directory:

    manifest.json          written last: the corpus is complete only when it exists
    progress.json          shards finished so far (an interrupted preparation resumes from it)
    vocab.txt              the tokenizer's vocabulary
    train-00000.npy ...    (windows, max_seq_length) uint16/uint32 token ids, one per shard
    valid-00000.npy

The directory may be remote (gs://...): preparing writes it locally first and uploads it,
manifest last; training copies it once to each host's local cache ($BITMAPS_JAX_CACHE, default
~/.cache/bitmaps_jax), since memory maps need local files, and reuses that copy afterwards.

Why numpy shards rather than grain + ArrayRecord: a window is a fixed-size row, so a memory
map gives O(1) random access with no new dependency, opening is reading one small JSON file,
and the order and masks are computed here from (seed, epoch, step, global row) with O(batch)
work, which is what resuming exactly and per-host sharding need.
"""

from bitmaps_jax.tasks.mlm.prepared.reader import (FORMAT, MANIFEST, PROGRESS, PreparedCorpus,
                                                   fetch, local_cache_dir, read_manifest)
from bitmaps_jax.tasks.mlm.prepared.writer import prepare
