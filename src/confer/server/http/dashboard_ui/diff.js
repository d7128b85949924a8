// A line diff of two texts (longest common subsequence), for a key's history.

const MAX_CELLS = 4_000_000;

/**
 * [{op: ' ' | '-' | '+', line}] turning the lines of `a` into those of `b`, or null if the
 * texts are too large to compare here.
 */
export function diffLines(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  let start = 0;
  while (start < x.length && start < y.length && x[start] === y[start]) start++;
  let endX = x.length;
  let endY = y.length;
  while (endX > start && endY > start && x[endX - 1] === y[endY - 1]) { endX--; endY--; }
  const n = endX - start;
  const m = endY - start;
  if ((n + 1) * (m + 1) > MAX_CELLS) return null;
  // lcs[i][j]: the longest common subsequence of x[start+i..endX) and y[start+j..endY).
  const width = m + 1;
  const lcs = new Uint32Array((n + 1) * width);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i * width + j] = x[start + i] === y[start + j]
        ? lcs[(i + 1) * width + j + 1] + 1
        : Math.max(lcs[(i + 1) * width + j], lcs[i * width + j + 1]);
    }
  }
  const out = x.slice(0, start).map((line) => ({op: ' ', line}));
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[start + i] === y[start + j]) {
      out.push({op: ' ', line: x[start + i]}); i++; j++;
    } else if (i < n && (j === m || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1])) {
      out.push({op: '-', line: x[start + i]}); i++;
    } else {
      out.push({op: '+', line: y[start + j]}); j++;
    }
  }
  for (const line of x.slice(endX)) out.push({op: ' ', line});
  return out;
}
