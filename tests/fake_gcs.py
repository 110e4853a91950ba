"""In-memory fake GCS for tests: gcp-storage-emulator plus the fixes the real stack needs.

  1. Object downloads carry `x-goog-generation` (and metageneration / stored length) headers.
     tensorstore's gcs kvstore takes the generation of what it read from that header; without it
     it gets generation 0, and its next conditional write of the same key (OCDBT's manifest
     update) fails with "Malformed StorageGeneration" -- intermittently, whenever OCDBT rereads
     the manifest.
  2. ifGenerationMatch / ifGenerationNotMatch on reads, deletes and media uploads (412 / 304), so
     tensorstore's conditional writes really are conditional, as on GCS.
  3. objects.list honours startOffset / endOffset. tensorstore lists (and so DeleteRange,
     i.e. deletes!) a key range with these and no `prefix`; the emulator ignores them and
     returns the whole bucket, so tensorstore would see -- and delete -- unrelated objects.
  4. The JSON API `moveTo` route (gcsfs >= 2025 renames with POST b/B/o/SRC/moveTo/o/DST; the
     emulator answers 501, which gcsfs retries for ~30 s before falling back to copy+delete).
  5. No traceback when a client hangs up before the answer is sent (gcsfs's info() races an
     object GET against a prefix listing and drops the loser): harmless, but pages of noise.

Usage: python fake_gcs.py PORT BUCKET [BUCKET ...]
"""
import json, logging, sys
from http import HTTPStatus
from gcp_storage_emulator import server, settings
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.exceptions import NotFound


def _current_generation(storage, bucket, name):
  try:
    return int(storage.get_file_obj(bucket, name)['generation'])
  except NotFound:
    return 0                                    # GCS: generation 0 means "does not exist"


def _with_preconditions(handler, read=False):
  def wrapped(request, response, storage, *args, **kwargs):
    bucket = request.params['bucket_name']
    name = request.params.get('object_id') or (request.query.get('name') or [None])[0]
    q = request.query
    if name is not None and ('ifGenerationMatch' in q or 'ifGenerationNotMatch' in q):
      gen = _current_generation(storage, bucket, name)
      if 'ifGenerationMatch' in q and int(q['ifGenerationMatch'][0]) != gen:
        response.status = HTTPStatus.PRECONDITION_FAILED
        return
      if 'ifGenerationNotMatch' in q and int(q['ifGenerationNotMatch'][0]) == gen:
        response.status = HTTPStatus.NOT_MODIFIED if read else HTTPStatus.PRECONDITION_FAILED
        return
    handler(request, response, storage, *args, **kwargs)
    if read and name is not None and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      try:
        obj = storage.get_file_obj(bucket, name)
      except NotFound:
        return
      response['x-goog-generation'] = str(obj['generation'])
      response['x-goog-metageneration'] = str(obj.get('metageneration', '1'))
      response['x-goog-stored-content-length'] = str(obj.get('size', ''))
  return wrapped


def _with_offsets(handler):
  def wrapped(request, response, storage, *args, **kwargs):
    handler(request, response, storage, *args, **kwargs)
    q = request.query
    start, end = (q.get('startOffset') or [''])[0], (q.get('endOffset') or [None])[0]
    if (start or end) and response.status == HTTPStatus.OK:
      out = json.loads(response._content)
      keep = lambda n: n >= start and (end is None or n < end)
      out['items'] = [o for o in out.get('items') or [] if keep(o['name'])]
      out['prefixes'] = [p for p in out.get('prefixes') or [] if keep(p)]
      response.json(out)
  return wrapped


def move(request, response, storage, *args, **kwargs):
  p = request.params
  try:
    obj = objects._copy(request.base_url, storage, p['bucket_name'], p['object_id'],
                        p['bucket_name'], p['dest_object_id'])
    objects._delete(storage, p['bucket_name'], p['object_id'])
    response.json(obj)
  except NotFound:
    response.status = HTTPStatus.NOT_FOUND


_WRAP = {objects.get: dict(read=True), objects.download: dict(read=True),
         objects.delete: {}, objects.insert: {}}
server.HANDLERS = tuple(
    (regex, {m: (_with_preconditions(h, **_WRAP[h]) if h in _WRAP else
                 _with_offsets(h) if h is objects.ls else h) for m, h in hs.items()})
    for regex, hs in server.HANDLERS)
for prefix in (settings.API_ENDPOINT, ''):
  server.HANDLERS = ((rf'^{prefix}/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/'
                      rf'(?P<dest_object_id>.*[^/]+)$', {server.POST: move}),) + server.HANDLERS


_close = server.Response.close
def _quiet_close(self):
  try:
    _close(self)
  except (BrokenPipeError, ConnectionResetError):
    pass
server.Response.close = _quiet_close


if __name__ == '__main__':
  logging.getLogger().setLevel(logging.CRITICAL)
  port, buckets = int(sys.argv[1]), sys.argv[2:]
  srv = server.create_server('127.0.0.1', port, in_memory=True, default_bucket=buckets[0])
  for b in buckets[1:]:
    from gcp_storage_emulator.handlers.buckets import create_bucket
    create_bucket(b, srv._storage)
  srv.run()
