"""A Kubernetes API emulator for tests/controller_kmock.rs: kmock's
`KubernetesEmulator` (PyPI `kmock` 0.8) plus the semantics kube-rs needs.

Usage: python adapter.py PORT   (prints "ready" once listening on 127.0.0.1:PORT;
exits when killed or when its stdin closes, so it never outlives the test).

What raw kmock 0.8 lacks and this subclass adds (measured against kube-rs):
- `metadata.uid`, `creationTimestamp`, `resourceVersion` (one cluster-wide
  counter) and `generation` (bumped only when something outside `metadata`
  and `status` changes); lists carry the current resourceVersion;
- watches that resume from `?resourceVersion=` (an event log, so nothing
  written between a list and its watch is lost), honour label/field
  selectors and `timeoutSeconds`, and send BOOKMARKs when
  `allowWatchBookmarks=true`;
- no-op writes are no-ops: same object, same resourceVersion, no watch event
  (raw kmock emits MODIFIED for every PATCH, so a controller that applies its
  children on every reconcile would wake itself up forever);
- the status subresource: `/status` writes change only `.status`, main writes
  and creates never change `.status` of resources that have one;
- server-side apply (`application/apply-patch+yaml`) creates missing objects;
  JSON merge patch (RFC 7386), JSON patch, and PUT (replace) are routed;
- optimistic concurrency: a write carrying `metadata.resourceVersion` that is
  not the current one is a 409 Conflict (what leader election relies on);
- label selectors (`=`, `==`, `!=`, `in`, `notin`, `k`, `!k`) on lists and
  watches; `metadata.name`/`metadata.namespace` field selectors;
- DELETE (any propagationPolicy) removes the object at once.

What it does NOT emulate: admission (defaulting, validation, webhooks), CRD
schemas and CEL rules, field ownership (apply merges maps and replaces
lists; a field the manager stops applying is not removed; no managedFields,
no apply conflicts), strategic merge (treated as JSON merge), RBAC and
authentication, garbage collection of owned objects, finalizers and
graceful deletion, namespaces as objects (any namespace exists),
cluster-scoped resources, pagination (`limit` is ignored; one page),
resourceVersion expiry (410 Gone), dryRun, table output, discovery beyond kmock's
own, and every controller (the test plays kubelet and
kube-controller-manager by writing status itself).
"""
import asyncio
import bisect
import copy
import datetime
import json
import os
import re
import sys
import threading
import uuid

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import rendering

# (group, version, plural) -> (kind, has a status subresource)
RESOURCES = {
    ('tractor.dev', 'v1alpha1', 'modeldeployments'): ('ModelDeployment', True),
    ('tractor.dev', 'v1alpha1', 'modelversions'): ('ModelVersion', False),
    ('apps', 'v1', 'deployments'): ('Deployment', True),
    ('batch', 'v1', 'jobs'): ('Job', True),
    ('', 'v1', 'pods'): ('Pod', True),
    ('', 'v1', 'services'): ('Service', True),
    ('', 'v1', 'configmaps'): ('ConfigMap', False),
    ('', 'v1', 'serviceaccounts'): ('ServiceAccount', False),
    ('', 'v1', 'secrets'): ('Secret', False),
    ('networking.k8s.io', 'v1', 'networkpolicies'): ('NetworkPolicy', False),
    ('autoscaling', 'v2', 'horizontalpodautoscalers'): ('HorizontalPodAutoscaler', True),
    ('policy', 'v1', 'poddisruptionbudgets'): ('PodDisruptionBudget', True),
    ('rbac.authorization.k8s.io', 'v1', 'roles'): ('Role', False),
    ('rbac.authorization.k8s.io', 'v1', 'rolebindings'): ('RoleBinding', False),
    ('coordination.k8s.io', 'v1', 'leases'): ('Lease', False),
    ('events.k8s.io', 'v1', 'events'): ('Event', False),
}
BOOKMARK_EVERY = 2.0  # seconds between bookmarks on an idle watch


def error(status, reason, message):
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


def merge(old, patch):
    """RFC 7386 JSON merge patch: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(old) if isinstance(old, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def label_selector(expr):
    """A predicate on a labels dict, from a Kubernetes label selector string."""
    checks = []
    for term in re.findall(r'[^,(]+(?:\([^)]*\))?', expr or ''):
        term = term.strip()
        if m := re.fullmatch(r'(\S+)\s+(in|notin)\s+\((.*)\)', term):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(',')}
            checks.append(lambda l, k=key, o=op, vs=values: (l.get(k) in vs) == (o == 'in'))
        elif m := re.fullmatch(r'([^!=]+?)\s*(==|=|!=)\s*(.*)', term):
            key, op, value = m[1], m[2], m[3]
            checks.append(lambda l, k=key, o=op, v=value: (l.get(k) == v) == (o != '!='))
        elif term.startswith('!'):
            checks.append(lambda l, k=term[1:]: k not in l)
        elif term:
            checks.append(lambda l, k=term: k in l)
    return lambda labels: all(check(labels or {}) for check in checks)


def field_selector(expr):
    """Only `metadata.name` and `metadata.namespace`, with `=`, `==` or `!=`."""
    checks = []
    for term in filter(None, (expr or '').split(',')):
        m = re.fullmatch(r'metadata\.(name|namespace)\s*(==|=|!=)\s*(.*)', term.strip())
        if not m:
            raise error(400, 'BadRequest', f'field selector not emulated: {term}')
        checks.append(lambda meta, f=m[1], o=m[2], v=m[3]: (meta.get(f) == v) == (o != '!='))
    return lambda meta: all(check(meta) for check in checks)


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def spec_part(obj):
    """What a generation counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ('metadata', 'status')}


@attrs.define(kw_only=True)
class Cluster(kmock.KubernetesEmulator):
    _rv: int = attrs.field(default=0, init=False)
    # Every change as (resourceVersion, resource, watch event), for resumable watches.
    _log: list = attrs.field(factory=list, init=False)
    _tick: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        for (group, version, plural), (kind, status) in RESOURCES.items():
            self.resources[kmock.resource(group, version, plural)] = kmock.ResourceInfo(
                kind=kind, namespaced=True, subresources={'status'} if status else set(),
                verbs={'get', 'list', 'watch', 'create', 'update', 'patch', 'delete'})

    async def _handle(self, request):
        res = request.resource
        if res is None or res.plural is None:
            return await super()._handle(request)  # discovery, /version: kmock's own
        kind, has_status = RESOURCES.get((res.group, res.version, res.plural), (None, False))
        if kind is None:
            raise kmock.KubernetesResourceNotFoundError()
        if request.subresource not in (None, 'status') or (request.subresource and not has_status):
            raise error(404, 'NotFound', f'subresource {request.subresource} not emulated')
        info = (res, kind, has_status)
        method, name = request.method.value, request.name
        if method == 'GET' and request.params.get('watch') in ('true', '1'):
            return await self._watch(request, info)
        if method == 'GET' and name is None:
            return self._list(request, info)
        if method == 'GET':
            return aiohttp.web.json_response(self._get(res, request.namespace, name))
        if method == 'POST' and name is None:
            return self._create(request, info, self._body(request))
        if method in ('PUT', 'PATCH') and name is not None:
            return self._update(request, info)
        if method == 'DELETE' and name is not None:
            return self._delete(request, info)
        raise error(405, 'MethodNotAllowed', f'{method} {request.url.path} is not emulated')

    # --- storage: kmock's objects array, plus resourceVersions and an event log

    def _get(self, res, namespace, name):
        key = (res, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            raise error(404, 'NotFound', f'{res.plural} "{name}" not found')
        return copy.deepcopy(self.objects[key].raw)

    def _record(self, res, event_type, obj):
        self._rv += 1
        obj['metadata']['resourceVersion'] = str(self._rv)
        self._log.append((self._rv, res, {'type': event_type, 'object': copy.deepcopy(obj)}))
        self._tick.set()  # wake every watch up; they re-arm on a fresh event
        self._tick = asyncio.Event()

    def _store(self, res, old, new):
        """Writes `new` unless it equals `old`: a no-op write changes nothing."""
        meta = new['metadata']
        if old is not None:
            for field in ('uid', 'creationTimestamp', 'name', 'namespace', 'resourceVersion', 'generation'):
                meta[field] = old['metadata'].get(field)
            if new == old:
                return new
            if spec_part(new) != spec_part(old):
                meta['generation'] = (old['metadata'].get('generation') or 0) + 1
        key = (res, meta.get('namespace'), meta['name'])
        self._record(res, 'ADDED' if old is None else 'MODIFIED', new)
        if key in self.objects:
            self.objects[key].history.append(copy.deepcopy(new))
        else:
            self.objects[key] = copy.deepcopy(new)
        return new

    def _body(self, request):
        if isinstance(request.data, (dict, list)):
            return copy.deepcopy(request.data)
        try:
            return json.loads(request.text)
        except ValueError:
            raise error(415, 'UnsupportedMediaType', 'only JSON bodies are emulated')

    # --- verbs

    def _matching(self, request, res):
        labels = label_selector(request.params.get('labelSelector'))
        fields = field_selector(request.params.get('fieldSelector'))
        namespace, name = request.namespace, request.name
        return lambda obj: (
            obj['metadata'].get('namespace') == namespace if namespace else True
        ) and (name is None or obj['metadata'].get('name') == name) and (
            labels(obj['metadata'].get('labels')) and fields(obj['metadata']))

    def _list(self, request, info):
        res, kind, _ = info
        match = self._matching(request, res)
        items = [copy.deepcopy(o.raw) for (r, _, _), o in self.objects.items()
                 if r == res and not o.deleted and match(o.raw)]
        return aiohttp.web.json_response({
            'apiVersion': f'{res.group}/{res.version}'.lstrip('/'), 'kind': f'{kind}List',
            'metadata': {'resourceVersion': str(self._rv)}, 'items': items})

    async def _watch(self, request, info):
        res, kind, _ = info
        match = self._matching(request, res)
        since = request.params.get('resourceVersion') or '0'
        bookmarks = request.params.get('allowWatchBookmarks') == 'true'
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(request.params.get('timeoutSeconds') or 1800)

        async def events():
            yield b''  # send the headers now, as kmock's own watch does
            if since == '0':  # no resourceVersion: the current state first
                for (r, _, _), o in list(self.objects.items()):
                    if r == res and not o.deleted and match(o.raw):
                        yield {'type': 'ADDED', 'object': copy.deepcopy(o.raw)}
                position = len(self._log)
            else:
                position = bisect.bisect_right([rv for rv, _, _ in self._log], int(since))
            while loop.time() < deadline:
                tick = self._tick
                while position < len(self._log):
                    _, r, event = self._log[position]
                    position += 1
                    if r == res and match(event['object']):
                        yield event
                try:
                    await asyncio.wait_for(tick.wait(), min(BOOKMARK_EVERY, max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    if bookmarks:
                        yield {'type': 'BOOKMARK', 'object': {
                            'apiVersion': f'{res.group}/{res.version}'.lstrip('/'), 'kind': kind,
                            'metadata': {'resourceVersion': str(self._rv)}}}

        response = rendering.Response(payload=events(), headers={'Content-Type': 'application/json'})
        return await response(request)

    def _create(self, request, info, body):
        res, kind, has_status = info
        meta = body.setdefault('metadata', {})
        if not meta.get('name') and meta.get('generateName'):
            meta['name'] = meta['generateName'] + uuid.uuid4().hex[:5]
        if not meta.get('name'):
            raise error(422, 'Invalid', 'metadata.name is required')
        meta['namespace'] = request.namespace or meta.get('namespace') or 'default'
        key = (res, meta['namespace'], meta['name'])
        if key in self.objects and not self.objects[key].deleted:
            raise error(409, 'AlreadyExists', f'{res.plural} "{meta["name"]}" already exists')
        body['apiVersion'] = f'{res.group}/{res.version}'.lstrip('/')
        body['kind'] = kind
        if has_status:
            body.pop('status', None)  # status is written through /status only
        meta.pop('resourceVersion', None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        return aiohttp.web.json_response(self._store(res, None, body), status=201)

    def _update(self, request, info):
        res, kind, has_status = info
        body = self._body(request)
        content_type = request.headers.get('Content-Type', '').split(';')[0].strip()
        apply = content_type == 'application/apply-patch+yaml'
        key = (res, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            if apply and request.subresource is None:  # server-side apply creates
                body.setdefault('metadata', {})['name'] = request.name
                return self._create(request, info, body)
            raise error(404, 'NotFound', f'{res.plural} "{request.name}" not found')
        old = self._get(res, request.namespace, request.name)
        wanted = (body.get('metadata') or {}).get('resourceVersion') if isinstance(body, dict) else None
        if wanted and not apply and wanted != old['metadata']['resourceVersion']:
            raise error(409, 'Conflict', f'the object has been modified; resourceVersion {wanted} '
                        f'is not the latest {old["metadata"]["resourceVersion"]}')
        if request.method.value == 'PUT':
            patched = body
        elif content_type == 'application/json-patch+json':
            patched = jsonpatch.apply_patch(old, body)
        else:  # apply, merge, strategic merge: all merged as RFC 7386 here
            patched = merge(old, body)
        if request.subresource == 'status':  # /status changes the status only
            new = copy.deepcopy(old)
            new.pop('status', None)
            if patched.get('status') is not None:
                new['status'] = copy.deepcopy(patched['status'])
        else:
            new = copy.deepcopy(patched)
            new['metadata'] = new.get('metadata') or {}
            if has_status:  # main writes never change the status
                new.pop('status', None)
                if 'status' in old:
                    new['status'] = old['status']
        new['apiVersion'], new['kind'] = old['apiVersion'], old['kind']
        return aiohttp.web.json_response(self._store(res, old, new))

    def _delete(self, request, info):
        res, _, _ = info
        obj = self._get(res, request.namespace, request.name)
        # No garbage collector and no finalizers: whatever propagationPolicy, it goes now.
        self._record(res, 'DELETED', obj)
        self.objects[(res, request.namespace, request.name)].delete()
        return aiohttp.web.json_response(obj)


async def serve(port):
    cluster = Cluster()
    async with cluster, kmock.Server(cluster, host='127.0.0.1', port=port):
        print('ready', flush=True)
        await asyncio.Event().wait()


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


if __name__ == '__main__':
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    asyncio.run(serve(int(sys.argv[1])))
