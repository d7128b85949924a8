// Cluster: every member's role, term, indexes and health, and the leader's changes, asked
// of this member once a second.
import {get} from './api.js';
import {clock, errorBox, every, fill, h, num, table} from './dom.js';

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function memberName(members, id) {
  const found = members.find((row) => row.member.id === id);
  return found?.member.name ? `${found.member.name} (${id})` : `member ${id}`;
}

function memberRow(row, data) {
  const m = row.member;
  const s = row.status;
  const role = s ? (s.role ?? '') + (s.is_learner ? ' (learner)' : '') : '-';
  const cells = [
    m.id, m.name ?? '', m.client_addr || '-',
    h('span', {class: `role ${s?.role ?? ''}`}, role),
    s ? num(s.raft_term) : '-', s ? num(s.commit_index) : '-',
    s ? num(s.applied_index) : '-', s ? num(s.revision) : '-',
    s ? bytes(num(s.storage_bytes)) : '-',
    h('span', {class: row.healthy ? 'good' : 'bad'}, row.health),
  ];
  return h('tr', {'data-member': m.id, class: m.id === data.member_id ? 'self' : ''},
    cells.map((cell) => h('td', {}, cell)));
}

function timeline(data) {
  const changes = [...data.leader_changes].reverse();
  if (!changes.length) return h('p', {class: 'muted'}, 'No leader change seen yet.');
  return h('ol', {class: 'timeline', 'data-test': 'leader-changes'}, changes.map((c) => h('li', {},
    h('time', {}, clock(c.at)), ' ',
    c.leader !== '0'
      ? [h('strong', {}, memberName(data.members, c.leader)), ` leads (term ${c.term})`]
      : h('span', {class: 'bad'}, `no leader (term ${c.term})`))));
}

export function show(root) {
  const summary = h('div', {class: 'summary'});
  const members = h('div');
  const changes = h('div');
  const note = h('p', {class: 'muted'});
  const problem = h('div');
  root.append(h('h2', {}, 'Cluster'), problem, summary, members,
    h('h3', {}, 'Leader changes seen by this member'), changes, note);
  return every(1000, async () => {
    let data;
    try {
      data = await get('/ui/api/cluster');
    } catch (e) {
      fill(problem, errorBox(`Cannot read the cluster from this member: ${e.message}`));
      return;
    }
    fill(problem);
    const leader = data.leader_id ?? '0';
    fill(summary,
      h('p', {}, 'Leader: ', leader !== '0'
        ? h('strong', {'data-test': 'leader', 'data-leader': leader},
          memberName(data.members, leader))
        : h('strong', {class: 'bad', 'data-test': 'leader', 'data-leader': '0'}, 'none known'),
      ` · term ${num(data.raft_term)} · this page is served by ${memberName(data.members,
        data.member_id)}`));
    fill(members, table(
      ['ID', 'Name', 'Client address', 'Role', 'Term', 'Commit', 'Applied', 'Revision',
        'Storage', 'Health'],
      data.members.map((row) => memberRow(row, data)), {'data-test': 'members'}));
    fill(changes, timeline(data));
    fill(note, `Updated ${clock(data.now)}; refreshed every second.`);
  });
}
