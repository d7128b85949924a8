// Leases, locks, elections and registered services (docs/coordination.md), refreshed every
// two seconds.
import {get} from './api.js';
import {errorBox, every, fill, h, keyLink, leaseHex, num, table} from './dom.js';
import {bytesOf, preview, textOf} from './values.js';

const REFRESH = 2000;

/** A page that shows render(answer) of GET path, refreshed. */
function polled(root, title, path, params, render) {
  const problem = h('div');
  const body = h('div');
  const note = h('p', {class: 'muted'});
  root.append(h('h2', {}, title), problem, body, note);
  return every(REFRESH, async () => {
    let answer;
    try {
      answer = await get(path, params());
    } catch (e) {
      fill(problem, errorBox(`Cannot read ${title.toLowerCase()}: ${e.message}`));
      return;
    }
    fill(problem);
    fill(body, render(answer));
    fill(note, `Updated ${new Date().toLocaleTimeString()}; refreshed every two seconds.`);
  });
}

function lease(id) {
  return id && id !== '0' ? `${leaseHex(id)}` : 'none';
}

export function leases(root) {
  return polled(root, 'Leases', '/ui/api/leases', () => ({}), (answer) => {
    const found = answer.leases ?? [];
    if (!found.length) return h('p', {class: 'muted'}, 'No leases.');
    return [table(['ID (hex)', 'ID', 'Granted TTL', 'Remaining', 'Keys'], found.map((l) => [
      leaseHex(l.id), l.id, `${num(l.granted_ttl)} s`,
      `${(num(l.remaining_ms) / 1000).toFixed(1)} s`,
      h('ul', {class: 'plain'}, (l.keys ?? []).map((k) => h('li', {}, keyLink(k)))),
    ]), {'data-test': 'leases'}),
    answer.more ? h('p', {class: 'muted'}, 'More leases exist than are shown.') : ''];
  });
}

function queues(answer, kind) {
  const found = answer[kind] ?? [];
  const lock = kind === 'locks';
  if (!found.length) {
    return h('p', {class: 'muted'}, lock ? 'No lock is held.' : 'No election has a candidate.');
  }
  return [found.map((q) => {
    const [first, ...rest] = q.queue;
    return h('section', {class: 'card', 'data-name': q.name},
      h('h3', {}, h('span', {class: 'key'}, q.name)),
      table(lock ? ['Holder', 'Lease', 'Fencing token'] : ['Leader', 'Value', 'Lease', 'Rev'],
        [lock ? [keyLink(first.path), lease(first.lease), num(first.create_revision)]
          : [keyLink(first.path), preview(bytesOf(first.value)), lease(first.lease),
            num(first.create_revision)]]),
      rest.length ? h('div', {}, h('p', {}, lock ? 'Waiters, in order:' : 'Candidates, in order:'),
        h('ol', {}, rest.map((kv) => h('li', {}, keyLink(kv.path),
          ` (lease ${lease(kv.lease)}, created at revision ${num(kv.create_revision)})`))))
        : h('p', {class: 'muted'}, lock ? 'No waiter.' : 'No other candidate.'));
  }),
  answer.more ? h('p', {class: 'muted'}, 'Only the first leases were looked at.') : ''];
}

export function locks(root) {
  return polled(root, 'Locks', '/ui/api/locks', () => ({}), (answer) => queues(answer, 'locks'));
}

export function elections(root) {
  return polled(root, 'Elections', '/ui/api/locks', () => ({}),
    (answer) => queues(answer, 'elections'));
}

/** An instance's address and metadata: the client's JSON object, or the value as text. */
function instance(kv) {
  const text = textOf(bytesOf(kv.value));
  if (text !== null) {
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed === 'object' && 'address' in parsed) {
        return [String(parsed.address), parsed.metadata ? JSON.stringify(parsed.metadata) : ''];
      }
    } catch {
      // not JSON: the value is the address
    }
  }
  return [preview(bytesOf(kv.value)), ''];
}

export function services(root, params) {
  const prefix = params.get('prefix') || '/services';
  return polled(root, 'Services', '/ui/api/services', () => ({prefix}), (answer) => {
    const found = answer.services ?? [];
    const intro = h('p', {class: 'muted'}, `Instances registered under ${answer.prefix}.`);
    if (!found.length) return [intro, h('p', {class: 'muted'}, 'No service is registered.')];
    return [intro, found.map((s) => h('section', {class: 'card', 'data-name': s.name},
      h('h3', {}, s.name),
      table(['Instance', 'Address', 'Metadata', 'Lease', 'Registered at'], s.instances.map((i) => {
        const [address, metadata] = instance(i.kv);
        return [h('a', {href: `#/keys?path=${encodeURIComponent(i.kv.path)}`, class: 'key'},
          i.instance), address, metadata, lease(i.kv.lease),
          `revision ${num(i.kv.create_revision)}`];
      })))),
    answer.more ? h('p', {class: 'muted'}, 'More instances exist than are shown.') : ''];
  });
}
