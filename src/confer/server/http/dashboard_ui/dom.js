// Building the page: every string goes in as text (a Text node or an attribute value),
// never as markup, so keys and values (user data) cannot inject anything.

/** An element: h('a', {href: '#/x', class: 'c', onclick: fn}, 'text', child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  return put(el, children);
}

/** Append children (nodes, or anything else as text) to el. */
export function put(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace el's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return put(el, children);
}

/** A table: headers, then rows of cells (each a node or text). */
export function table(headers, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', {}, t)))),
    h('tbody', {}, rows.map((row) => (row instanceof Node ? row
      : h('tr', {}, row.map((cell) => h('td', {}, cell)))))));
}

/** An error banner. */
export function errorBox(message) {
  return h('p', {class: 'error', role: 'alert'}, message);
}

/** A link to the keys page at a path. */
export function keyLink(path) {
  return h('a', {href: `#/keys?path=${encodeURIComponent(path)}`, class: 'key'}, path);
}

/** Call fn now and then every `ms` (after each call has finished) until stopped. */
export function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    await fn();
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return {stop() { stopped = true; clearTimeout(timer); }};
}

/** A 64-bit integer of the JSON (a string, or absent for 0) as a Number. */
export function num(value) {
  return Number(value ?? 0);
}

/** A lease id (a decimal string) in the hexadecimal the keys name it by. */
export function leaseHex(id) {
  return id ? BigInt(id).toString(16) : '';
}

export function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}
