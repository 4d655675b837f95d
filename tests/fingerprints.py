"""A short hash of one training batch (token ids, masks, advantages to 6 decimals), to pin a recorded run's rows."""

import hashlib
import json


def batch_fingerprint(batch) -> str:
    m = hashlib.sha1()
    for key in ("prompt_ids", "completion_ids", "completion_mask"):
        m.update(json.dumps(batch[key].tolist()).encode())
    m.update(json.dumps([round(x, 6) for x in batch["advantages"].tolist()]).encode())
    return m.hexdigest()[:16]
