// A value's bytes shown as text, pretty JSON or a hex dump.

export function bytesOf(base64) {
  const raw = atob(base64 ?? '');
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** The bytes as UTF-8 text, or null if they are not UTF-8. */
export function textOf(bytes) {
  try {
    return new TextDecoder('utf-8', {fatal: true}).decode(bytes);
  } catch {
    return null;
  }
}

export function hexDump(bytes) {
  const lines = [];
  for (let at = 0; at < bytes.length; at += 16) {
    const row = bytes.subarray(at, at + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.'))
      .join('');
    lines.push(`${at.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  return lines.join('\n');
}

/** The text of JSON pretty-printed, or null if it is not a JSON object or array. */
export function prettyJson(text) {
  const trimmed = text.trim();
  if (!trimmed.startsWith('{') && !trimmed.startsWith('[')) return null;
  try {
    return JSON.stringify(JSON.parse(trimmed), null, 2);
  } catch {
    return null;
  }
}

export const MODES = ['auto', 'text', 'json', 'hex'];

/**
 * The value in a mode: {kind, text, note}. auto: JSON pretty-printed if it is a JSON object
 * or array, else text if it is UTF-8, else hex.
 */
export function show(bytes, mode = 'auto') {
  const text = textOf(bytes);
  if (mode === 'hex' || (mode === 'auto' && text === null)) {
    return {kind: 'hex', text: hexDump(bytes)};
  }
  if (text === null) {
    return {kind: 'hex', text: hexDump(bytes), note: 'not UTF-8 text: shown in hex'};
  }
  if (mode === 'json' || mode === 'auto') {
    const pretty = prettyJson(text);
    if (pretty !== null) return {kind: 'json', text: pretty};
    if (mode === 'json') return {kind: 'text', text, note: 'not a JSON object or array'};
  }
  return {kind: 'text', text};
}

/** A one-line preview of the bytes, at most `max` characters. */
export function preview(bytes, max = 60) {
  const text = textOf(bytes);
  const line = text === null
    ? `0x${Array.from(bytes.subarray(0, max / 2), (b) => b.toString(16).padStart(2, '0')).join('')}`
    : text.replace(/\s+/g, ' ');
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}
