// Keys: the tree (children listings), a key's value and metadata, and its history with a
// diff between two versions. Signed in, a user may also edit, create and delete keys (the
// server checks the user's permissions).
import {get, post, session} from './api.js';
import {diffLines} from './diff.js';
import {errorBox, fill, h, leaseHex, num, table} from './dom.js';
import {MODES, bytesOf, preview, show as showValue, textOf} from './values.js';

function join(parent, name) {
  return parent === '/' ? `/${name}` : `${parent}/${name}`;
}

function parentOf(path) {
  const at = path.lastIndexOf('/');
  return at <= 0 ? '/' : path.slice(0, at);
}

function ancestors(path) {
  const out = ['/'];
  const parts = path.split('/').filter(Boolean);
  for (let i = 1; i <= parts.length; i++) out.push(`/${parts.slice(0, i).join('/')}`);
  return out;
}

class Tree {
  constructor(onError) {
    this.onError = onError;
    this.selected = '/';
    this.items = new Map(); // path -> {li, label, open(expand)}
    this.root = h('ul', {class: 'tree', 'data-test': 'tree'});
    this.root.append(this.node('/', '/'));
  }

  node(path, name) {
    const kids = h('ul', {hidden: true});
    const toggle = h('button', {type: 'button', class: 'toggle', 'aria-label': `expand ${path}`},
      '▸');
    const label = h('a', {href: `#/keys?path=${encodeURIComponent(path)}`, 'data-path': path},
      name);
    const li = h('li', {}, toggle, label, kids);
    let loaded = false;
    let isOpen = false;
    const open = async (want) => {
      const fresh = want && !loaded;
      if (fresh) {
        loaded = true;
        let answer;
        try {
          answer = await get('/ui/api/children', {path});
        } catch (e) {
          loaded = false;
          this.onError(`Cannot list the children of ${path}: ${e.message}`);
          return;
        }
        const names = answer.names ?? [];
        for (const child of names) kids.append(this.node(join(path, child), child));
        if (answer.more) kids.append(h('li', {class: 'muted'}, '… more children not shown'));
        if (!names.length) {
          toggle.disabled = true;
          toggle.textContent = '·';
        }
      }
      isOpen = want && !toggle.disabled;
      kids.hidden = !isOpen;
      if (!toggle.disabled) toggle.textContent = isOpen ? '▾' : '▸';
      if (fresh && isOpen) this.expandTowards(this.selected); // the next step, now listed
    };
    toggle.addEventListener('click', () => open(!isOpen));
    this.items.set(path, {label, open, isOpen: () => isOpen});
    if (path === this.selected) label.classList.add('selected');
    return li;
  }

  expandTowards(path) {
    for (const step of ancestors(path)) {
      const item = this.items.get(step);
      if (!item) return;
      if (step !== path && !item.isOpen()) {
        item.open(true);
        return; // the rest once its children are in
      }
    }
  }

  select(path) {
    this.items.get(this.selected)?.label.classList.remove('selected');
    this.selected = path;
    this.items.get(path)?.label.classList.add('selected');
    this.expandTowards(path);
  }
}

function metadata(kv) {
  const lease = kv.lease ?? '0';
  return table(['Create revision', 'Mod revision', 'Version', 'Lease', 'Size'], [[
    num(kv.create_revision), num(kv.mod_revision), num(kv.version),
    lease !== '0' ? h('a', {href: '#/leases'}, `${leaseHex(lease)} (${lease})`) : 'none',
    `${bytesOf(kv.value).length} bytes`,
  ]], {'data-test': 'metadata'});
}

function valueView(kv) {
  const bytes = bytesOf(kv.value);
  const pre = h('pre', {class: 'value', 'data-test': 'value'});
  const note = h('p', {class: 'muted'});
  const buttons = MODES.map((mode) => h('button', {type: 'button', 'data-mode': mode,
    onclick: () => render(mode)}, mode === 'auto' ? 'Auto' : mode.toUpperCase()));
  function render(mode) {
    const shown = showValue(bytes, mode);
    pre.textContent = shown.text;
    pre.className = `value ${shown.kind}`;
    note.textContent = shown.note ?? (mode === 'auto' ? `shown as ${shown.kind}` : '');
    for (const b of buttons) b.classList.toggle('active', b.dataset.mode === mode);
  }
  render('auto');
  return h('div', {}, h('div', {class: 'modes'}, 'Value: ', buttons), note, pre);
}

/**
 * Edit (as text) and Delete of the key at path, for a signed-in user; onChanged(path) once
 * it changed, with the path to show next. A refusal is shown as text.
 */
function editView(path, kv, onChanged) {
  const problem = h('div', {'data-test': 'edit-error'});
  const text = textOf(bytesOf(kv.value));
  const area = h('textarea', {name: 'value', rows: 8, 'data-test': 'edit-value',
    'aria-label': `new value of ${path}`});
  async function write(route, body, doing, next) {
    fill(problem);
    try {
      await post(route, body);
    } catch (e) {
      fill(problem, errorBox(`Cannot ${doing} ${path}: ${e.message}`));
      return;
    }
    onChanged(next);
  }
  const form = h('form', {class: 'edit', hidden: true, onsubmit: (event) => {
    event.preventDefault();
    // With its lease: a put without one would detach the key from it.
    write('/ui/api/put', {path, value: area.value, lease: kv.lease ?? '0'}, 'save', path);
  }}, area, h('div', {class: 'buttons'}, h('button', {type: 'submit'}, 'Save'),
    h('button', {type: 'button', onclick: () => { form.hidden = true; }}, 'Cancel')));
  const edit = h('button', {type: 'button', disabled: text === null,
    title: text === null ? 'Not UTF-8 text: it cannot be edited here.' : undefined,
    onclick: () => {
      area.value = text;
      form.hidden = false;
      area.focus();
    }}, 'Edit');
  const remove = h('button', {type: 'button', class: 'danger', onclick: () => {
    if (confirm(`Delete the key ${path}?`)) {
      write('/ui/api/delete', {path}, 'delete', parentOf(path));
    }
  }}, 'Delete');
  return h('div', {}, h('div', {class: 'modes'}, edit, remove), form, problem);
}

/** Create (or overwrite) a key, for a signed-in user; onChanged(path) once it is there. */
function newKeyForm(onChanged) {
  const path = h('input', {name: 'new-path', placeholder: '/app/new', 'aria-label': 'new key',
    'data-test': 'new-path', required: true});
  const value = h('input', {name: 'new-value', placeholder: 'value (text)',
    'aria-label': 'value of the new key', 'data-test': 'new-value'});
  const problem = h('div');
  const form = h('form', {class: 'inline', onsubmit: async (event) => {
    event.preventDefault();
    fill(problem);
    try {
      await post('/ui/api/put', {path: path.value, value: value.value});
    } catch (e) {
      fill(problem, errorBox(`Cannot create ${path.value}: ${e.message}`));
      return;
    }
    onChanged(path.value);
    form.reset();
  }}, 'New key: ', path, value, h('button', {type: 'submit'}, 'Create'));
  return {form, problem, under(parent) { path.placeholder = join(parent, 'new'); }};
}

function diffText(kv) {
  const shown = showValue(bytesOf(kv.value), 'auto');
  return shown.text;
}

function historyView(answer) {
  const versions = answer.versions ?? [];
  if (versions.length < 2) {
    return h('p', {class: 'muted'}, versions.length ? 'Only one version since the key was created'
      + (answer.compacted ? ' (older ones were compacted)' : '') + '.' : '');
  }
  const out = h('div', {class: 'diff', 'data-test': 'diff'});
  const chosen = {a: 1, b: 0};
  const radios = (side) => versions.map((_, i) => h('input', {type: 'radio', name: `side-${side}`,
    checked: chosen[side] === i, 'aria-label': `${side === 'a' ? 'from' : 'to'} version`,
    onchange: () => { chosen[side] = i; renderDiff(); }}));
  const from = radios('a');
  const to = radios('b');
  function renderDiff() {
    const a = versions[chosen.a];
    const b = versions[chosen.b];
    const lines = diffLines(diffText(a), diffText(b));
    fill(out, h('p', {}, `Changes from version ${num(a.version)} (revision ${num(a.mod_revision)})`
      + ` to version ${num(b.version)} (revision ${num(b.mod_revision)}):`),
    lines === null ? h('p', {class: 'muted'}, 'Too large to compare here.')
      : h('pre', {}, lines.map((d) => h('span', {class: d.op === '+' ? 'add'
        : d.op === '-' ? 'del' : 'same'}, `${d.op} ${d.line}\n`))));
  }
  renderDiff();
  const rows = versions.map((kv, i) => [from[i], to[i], num(kv.version), num(kv.mod_revision),
    h('span', {class: 'preview'}, preview(bytesOf(kv.value)))]);
  const notes = [];
  if (answer.more) notes.push('Older versions are not shown.');
  if (answer.compacted) notes.push('Older versions were compacted.');
  return h('div', {}, table(['From', 'To', 'Version', 'Mod revision', 'Value'], rows,
    {'data-test': 'history'}), h('p', {class: 'muted'}, notes.join(' ')), out);
}

export function show(root, params) {
  const problem = h('div');
  const treebox = h('nav', {class: 'treebox'});
  let tree;
  function newTree() {
    tree = new Tree((message) => fill(problem, errorBox(message)));
    fill(treebox, tree.root);
    tree.items.get('/').open(true);
  }
  const details = h('section', {class: 'details'});
  const goto = h('input', {name: 'path', placeholder: '/app/config', 'aria-label': 'path'});
  const form = h('form', {class: 'inline', onsubmit: (event) => {
    event.preventDefault();
    location.hash = `#/keys?path=${encodeURIComponent(goto.value || '/')}`;
  }}, goto, h('button', {type: 'submit'}, 'Open'));
  const signedIn = Boolean(session.token);
  /** After a write: the tree listed anew, and the key at path shown. */
  function changed(path) {
    newTree();
    const hash = `#/keys?path=${encodeURIComponent(path)}`;
    if (location.hash === hash) select(path);
    else location.hash = hash;
  }
  const creator = signedIn ? newKeyForm(changed) : null;
  root.append(h('h2', {}, 'Keys'), form, creator?.form, creator?.problem, problem,
    h('div', {class: 'columns'}, treebox, details));
  let serial = 0;

  async function select(path) {
    const mine = ++serial;
    tree.select(path);
    goto.value = path;
    creator?.under(path);
    fill(details, h('p', {class: 'muted'}, `Reading ${path}…`));
    let key;
    let history;
    try {
      key = path === '/' ? {} : await get('/ui/api/key', {path});
      history = key.kv ? await get('/ui/api/history', {path}) : null;
    } catch (e) {
      if (mine === serial) fill(details, errorBox(`Cannot read ${path}: ${e.message}`));
      return;
    }
    if (mine !== serial) return; // another key was chosen meanwhile
    const heading = h('h3', {}, h('span', {class: 'key'}, path), ' ',
      h('a', {href: `#/watch?path=${encodeURIComponent(path)}&recursive=true`, class: 'small'},
        'watch'));
    if (!key.kv) {
      fill(details, heading, h('p', {class: 'muted', 'data-test': 'no-key'},
        path === '/' ? 'The root of the tree: choose a key.'
          : 'No key at this path (it may have children).'));
      return;
    }
    fill(details, heading, metadata(key.kv), valueView(key.kv),
      signedIn ? editView(path, key.kv, changed) : null, h('h3', {}, 'History'),
      historyView(history));
  }

  newTree();
  select(params.get('path') || '/');
  return {
    stop() { serial++; },
    update(next) { select(next.get('path') || '/'); },
  };
}
