// The dashboard's JSON API on this listener (/ui/api/...). The auth token, once signed in,
// is kept in this tab's sessionStorage and sent as the Authorization header.

const TOKEN = 'confer.token';
const USER = 'confer.user';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN) ?? ''; },
  get user() { return sessionStorage.getItem(USER) ?? ''; },
  set(user, token) {
    sessionStorage.setItem(USER, user);
    sessionStorage.setItem(TOKEN, token);
  },
  clear() {
    sessionStorage.removeItem(USER);
    sessionStorage.removeItem(TOKEN);
  },
};

let authNeeded = () => {};

/** fn(error) is called when a request is refused for want of (valid) credentials. */
export function onAuthNeeded(fn) {
  authNeeded = fn;
}

function url(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

async function send(path, init) {
  const headers = {...(init.headers ?? {})};
  if (session.token) headers.Authorization = session.token;
  try {
    return await fetch(path, {...init, headers, cache: 'no-store'});
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach this member (${e.message})`);
  }
}

async function answer(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // not JSON: the status says enough
  }
  if (!resp.ok) {
    const error = new ApiError(resp.status, body?.message ?? `HTTP ${resp.status}`);
    if (resp.status === 401) authNeeded(error);
    throw error;
  }
  return body;
}

/** GET path?params: the JSON answer, or an ApiError. */
export async function get(path, params = {}, signal = undefined) {
  return answer(await send(url(path, params), {signal}));
}

/**
 * POST the JSON of body to path: the JSON answer, or an ApiError. Writes are sent so (as
 * JSON, from this page's origin), the only way the server takes them.
 */
export async function post(path, body) {
  return answer(await send(path, {
    method: 'POST', body: JSON.stringify(body), headers: {'Content-Type': 'application/json'},
  }));
}

/** Sign in (etcd's Authenticate): keeps the token for the next requests. */
export async function login(name, password) {
  const body = await post('/ui/api/login', {name, password});
  session.set(body.name, body.token);
  return body;
}

/**
 * Read a streamed answer (one JSON object a line), calling onObject(object) for each, until
 * it ends (resolves) or fails (an ApiError); abort `signal` to stop it.
 */
export async function stream(path, params, onObject, signal) {
  const resp = await send(url(path, params), {signal});
  if (!resp.ok) await answer(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, `the stream from this member broke (${e.message})`);
    }
    if (chunk.done) return;
    buffer += chunk.value;
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      if (line.trim()) onObject(JSON.parse(line));
    }
  }
}
