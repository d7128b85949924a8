// Watch: the changes of a key or subtree as they happen, streamed from this member.
import {stream} from './api.js';
import {errorBox, fill, h, keyLink, num} from './dom.js';
import {bytesOf, preview} from './values.js';

const MAX_ROWS = 500;

export function show(root, params) {
  const path = h('input', {name: 'path', value: params.get('path') || '/', 'aria-label': 'path'});
  const recursive = h('input', {type: 'checkbox', name: 'recursive',
    checked: params.get('recursive') !== 'false'});
  const from = h('input', {name: 'rev', type: 'number', min: '0', placeholder: 'now',
    value: params.get('rev') || '', 'aria-label': 'from revision'});
  const button = h('button', {type: 'submit'}, 'Watch');
  const state = h('p', {class: 'muted', 'data-test': 'watch-state'}, 'Not watching.');
  const problem = h('div');
  const rows = h('tbody');
  const events = h('table', {'data-test': 'events'}, h('thead', {}, h('tr', {},
    ['Time', 'Revision', 'Event', 'Key', 'Value', 'Previous value'].map((t) => h('th', {}, t)))),
  rows);
  let controller = null;
  let lastRevision = 0;

  function stop() {
    controller?.abort();
    controller = null;
    button.textContent = 'Watch';
  }

  function add(event, revision) {
    const kv = event.kv ?? {};
    const type = event.type ?? 'PUT';
    rows.prepend(h('tr', {class: type === 'DELETE' ? 'deleted' : ''},
      h('td', {}, new Date().toLocaleTimeString()), h('td', {}, revision),
      h('td', {}, type), h('td', {}, keyLink(kv.path ?? '')),
      h('td', {class: 'preview'}, type === 'DELETE' ? '' : preview(bytesOf(kv.value))),
      h('td', {class: 'preview'}, event.prev_kv ? preview(bytesOf(event.prev_kv.value)) : '')));
    while (rows.children.length > MAX_ROWS) rows.lastChild.remove();
  }

  async function start(rev) {
    stop();
    fill(problem);
    const mine = new AbortController();
    controller = mine;
    button.textContent = 'Stop';
    const what = `${path.value}${recursive.checked ? ' and below' : ''}`;
    state.textContent = `Starting a watch of ${what}…`;
    try {
      await stream('/ui/api/watch', {path: path.value, recursive: recursive.checked, rev},
        (message) => {
          if (message.error) throw new Error(message.error.message);
          const result = message.result ?? {};
          const revision = num(result.header?.revision);
          lastRevision = Math.max(lastRevision, revision);
          if (result.canceled) throw new Error(result.cancel_reason || 'the watch was canceled');
          for (const event of result.events ?? []) add(event, num(event.kv?.mod_revision));
          state.textContent = `Watching ${what}: at revision ${lastRevision}.`;
        }, mine.signal);
      if (controller === mine) throw new Error('this member ended the watch');
    } catch (e) {
      if (e.name === 'AbortError' || controller !== mine) return;
      stop();
      const resume = h('button', {type: 'button', onclick: () => start(lastRevision + 1)},
        `Resume from revision ${lastRevision + 1}`);
      fill(problem, errorBox(`The watch stopped: ${e.message}`), lastRevision ? resume : '');
      state.textContent = 'Not watching.';
    }
  }

  const form = h('form', {class: 'inline', onsubmit: (event) => {
    event.preventDefault();
    if (controller) {
      stop();
      state.textContent = 'Not watching.';
    } else {
      rows.replaceChildren();
      lastRevision = 0;
      start(from.value);
    }
  }}, h('label', {}, 'Path ', path), h('label', {}, recursive, ' and below'),
  h('label', {}, 'from revision ', from), button);
  root.append(h('h2', {}, 'Watch'), form, state, problem, events);
  if (params.get('path')) start(from.value);
  return {stop};
}
