// The session's web page: Transmission's RPC (the same one transmission-remote speaks), polled.
// Every name that comes from a torrent, a tracker or a peer is set as text (textContent,
// option.text, attributes through setAttribute), never parsed as HTML, and the page's
// Content-Security-Policy runs no script but this file.
'use strict';

const RPC_PATH = '/transmission/rpc';
const POLL_MS = 2000;
const HIDDEN_POLL_MS = 10000;

const STATES = ['Stopped', 'Queued to check', 'Checking', 'Queued', 'Downloading', 'Queued to seed', 'Seeding'];
const LIST_FIELDS = ['id', 'name', 'totalSize', 'sizeWhenDone', 'percentDone', 'status', 'rateDownload',
  'rateUpload', 'eta', 'peersConnected', 'uploadRatio', 'error', 'errorString', 'metadataPercentComplete',
  'recheckProgress', 'isFinished'];
const DETAIL_FIELDS = ['id', 'name', 'hashString', 'files', 'fileStats', 'peers', 'trackerStats'];

const $ = (id) => document.getElementById(id);

// --- the RPC -----------------------------------------------------------------------------

let sessionId = '';

class RpcError extends Error {}

// One request; a 409 hands us the session id (the CSRF guard) and the request goes again once.
async function rpc(method, args = {}) {
  for (let attempt = 0; attempt < 2; ++attempt) {
    const response = await fetch(RPC_PATH, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-Transmission-Session-Id': sessionId },
      body: JSON.stringify({ method, arguments: args }),
    });
    if (response.status === 409) {
      sessionId = response.headers.get('X-Transmission-Session-Id') || '';
      continue;
    }
    let reply = null;
    try {
      reply = await response.json();
    } catch (e) {
      throw new RpcError(`${method}: HTTP ${response.status}`);
    }
    if (!response.ok || reply.result !== 'success') {
      throw new RpcError(`${method}: ${reply && reply.result ? reply.result : 'HTTP ' + response.status}`);
    }
    return reply.arguments || {};
  }
  throw new RpcError(`${method}: the server keeps refusing our session id`);
}

// --- formatting ----------------------------------------------------------------------------

function bytes(n) {
  if (!(n >= 0)) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; ++i; }
  return (i === 0 ? String(n) : n.toFixed(n >= 100 ? 0 : 1)) + ' ' + units[i];
}

function rate(n) { return n > 0 ? bytes(n) + '/s' : ''; }

function duration(seconds) {
  if (seconds < 0) return seconds === -1 ? '' : 'unknown';
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
  const m = Math.floor(seconds / 60) % 60, s = Math.floor(seconds) % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

function ratio(r) {
  if (r === -2) return '∞';
  if (r < 0) return '';
  return r.toFixed(2);
}

function stateOf(t) {
  if (t.error) return 'Error: ' + t.errorString;
  if (t.metadataPercentComplete < 1) return `Fetching metadata (${Math.floor(t.metadataPercentComplete * 100)}%)`;
  if (t.status === 2) return `Checking (${Math.floor(t.recheckProgress * 100)}%)`;
  if (t.status === 0 && t.isFinished) return 'Finished';
  return STATES[t.status] || 'Unknown';
}

// An element with text (never HTML) and attributes.
function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function cell(label, text, className) {
  const td = el('td', text, { 'data-label': label });
  if (className) td.className = className;
  return td;
}

// --- messages ------------------------------------------------------------------------------

function showMessage(text) {
  const m = $('message');
  m.textContent = text;
  m.hidden = !text;
}

// --- the list ------------------------------------------------------------------------------

const rows = new Map();  // id -> {tr, cells, torrent}
let selectedId = null;

function makeRow(t) {
  const tr = el('tr', null, { 'data-id': String(t.id) });
  const name = el('button', '', { type: 'button', class: 'open' });
  name.addEventListener('click', () => openDetail(t.id));
  const nameCell = cell('Name', null, 'name');
  nameCell.append(name);
  const bar = el('progress', null, { max: '1' });
  const pct = el('span', '', { class: 'pct' });
  const progressCell = cell('Progress', null, 'num');
  progressCell.append(bar, pct);
  const startStop = el('button', '', { type: 'button', class: 'start-stop' });
  startStop.addEventListener('click', () => toggle(t.id));
  const remove = el('button', 'Remove', { type: 'button', class: 'remove' });
  remove.addEventListener('click', () => askRemove(t.id));
  const actions = cell('', null, 'actions');
  actions.append(startStop, remove);
  const cells = {
    name, bar, pct, startStop,
    size: cell('Size', '', 'num'), state: cell('State', ''), down: cell('Down', '', 'num'),
    up: cell('Up', '', 'num'), eta: cell('ETA', '', 'num'), peers: cell('Peers', '', 'num'),
    ratio: cell('Ratio', '', 'num'),
  };
  tr.append(nameCell, cells.size, progressCell, cells.state, cells.down, cells.up, cells.eta, cells.peers,
    cells.ratio, actions);
  return { tr, cells, torrent: t };
}

function updateRow(row, t) {
  const c = row.cells;
  row.torrent = t;
  c.name.textContent = t.name;
  c.size.textContent = bytes(t.sizeWhenDone || t.totalSize);
  c.bar.value = t.percentDone;
  c.pct.textContent = (t.percentDone * 100).toFixed(1) + '%';
  c.state.textContent = stateOf(t);
  c.state.className = t.error ? 'state-error' : '';
  c.down.textContent = rate(t.rateDownload);
  c.up.textContent = rate(t.rateUpload);
  c.eta.textContent = t.status === 4 ? duration(t.eta) : '';
  c.peers.textContent = String(t.peersConnected);
  c.ratio.textContent = ratio(t.uploadRatio);
  const stopped = t.status === 0;
  c.startStop.textContent = stopped ? 'Start' : 'Stop';
  c.startStop.setAttribute('aria-label', (stopped ? 'Start ' : 'Stop ') + t.name);
  row.tr.classList.toggle('selected', t.id === selectedId);
}

function render(torrents) {
  const body = $('torrents').tBodies[0];
  const seen = new Set();
  torrents.sort((a, b) => a.id - b.id);
  for (const t of torrents) {
    seen.add(t.id);
    let row = rows.get(t.id);
    if (!row) {
      row = makeRow(t);
      rows.set(t.id, row);
    }
    updateRow(row, t);
    body.append(row.tr);  // keeps the order by id; moving a row in place keeps its buttons
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
      if (id === selectedId) closeDetail();
    }
  }
  $('empty').hidden = torrents.length > 0;
  const down = torrents.reduce((s, t) => s + t.rateDownload, 0);
  const up = torrents.reduce((s, t) => s + t.rateUpload, 0);
  $('totals').textContent = `${torrents.length} torrent${torrents.length === 1 ? '' : 's'}` +
    (down ? ` · ↓ ${rate(down)}` : '') + (up ? ` · ↑ ${rate(up)}` : '');
}

async function toggle(id) {
  const row = rows.get(id);
  if (!row) return;
  try {
    await rpc(row.torrent.status === 0 ? 'torrent-start' : 'torrent-stop', { ids: [id] });
    await refresh();
  } catch (e) {
    showMessage(e.message);
  }
}

// --- removing ------------------------------------------------------------------------------

let removingId = null;

function askRemove(id) {
  const row = rows.get(id);
  if (!row) return;
  removingId = id;
  $('remove-name').textContent = row.torrent.name;
  $('remove-data').checked = false;
  $('remove-dialog').showModal();
}

async function confirmRemove(event) {
  event.preventDefault();
  const id = removingId;
  $('remove-dialog').close();
  if (id === null) return;
  try {
    await rpc('torrent-remove', { ids: [id], 'delete-local-data': $('remove-data').checked });
    await refresh();
  } catch (e) {
    showMessage(e.message);
  }
}

// --- adding --------------------------------------------------------------------------------

function base64Of(buffer) {
  const bytesView = new Uint8Array(buffer);
  let binary = '';
  for (let i = 0; i < bytesView.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytesView.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

async function submitAdd(event) {
  event.preventDefault();
  const error = $('add-error');
  error.hidden = true;
  const file = $('add-file').files[0];
  const link = $('add-link').value.trim();
  const args = { paused: $('add-paused').checked };
  const dir = $('add-dir').value.trim();
  if (dir) args['download-dir'] = dir;
  if (file) {
    args.metainfo = base64Of(await file.arrayBuffer());
  } else if (link) {
    args.filename = link;
  } else {
    error.textContent = 'Choose a .torrent file, or give a magnet link or a path.';
    error.hidden = false;
    return;
  }
  try {
    const added = await rpc('torrent-add', args);
    $('add-dialog').close();
    $('add-form').reset();
    if (added['torrent-duplicate']) showMessage(`Already in the list: ${added['torrent-duplicate'].name}`);
    await refresh();
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

// --- speed limits --------------------------------------------------------------------------

async function openLimits() {
  $('limits-error').hidden = true;
  try {
    const s = await rpc('session-get', {
      fields: ['speed-limit-down', 'speed-limit-down-enabled', 'speed-limit-up', 'speed-limit-up-enabled'],
    });
    $('limit-down').value = s['speed-limit-down'];
    $('limit-down-on').checked = s['speed-limit-down-enabled'];
    $('limit-up').value = s['speed-limit-up'];
    $('limit-up-on').checked = s['speed-limit-up-enabled'];
    $('limits-dialog').showModal();
  } catch (e) {
    showMessage(e.message);
  }
}

async function saveLimits(event) {
  event.preventDefault();
  const down = Number($('limit-down').value), up = Number($('limit-up').value);
  const error = $('limits-error');
  if (!(down >= 1 && up >= 1) || !Number.isInteger(down) || !Number.isInteger(up)) {
    error.textContent = 'Limits are whole numbers of kB/s, at least 1.';
    error.hidden = false;
    return;
  }
  try {
    await rpc('session-set', {
      'speed-limit-down': down, 'speed-limit-down-enabled': $('limit-down-on').checked,
      'speed-limit-up': up, 'speed-limit-up-enabled': $('limit-up-on').checked,
    });
    $('limits-dialog').close();
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

// --- a torrent's detail --------------------------------------------------------------------

const PRIORITIES = [[-1, 'Low'], [0, 'Normal'], [1, 'High']];

function openDetail(id) {
  selectedId = id;
  for (const row of rows.values()) row.tr.classList.toggle('selected', row.torrent.id === id);
  $('detail').hidden = false;
  $('files').tBodies[0].replaceChildren();
  refreshDetail().then(() => $('detail').scrollIntoView({ block: 'nearest' }));
}

function closeDetail() {
  selectedId = null;
  $('detail').hidden = true;
  for (const row of rows.values()) row.tr.classList.remove('selected');
}

async function setFile(id, index, change) {
  try {
    await rpc('torrent-set', Object.assign({ ids: [id] }, change(index)));
    await refreshDetail();
  } catch (e) {
    showMessage(e.message);
  }
}

function renderFiles(t) {
  const body = $('files').tBodies[0];
  const files = t.files || [], stats = t.fileStats || [];
  // Rows are built once per torrent and updated in place, so a click is never lost to a poll.
  if (body.childElementCount !== files.length || body.dataset.torrent !== String(t.id)) {
    body.replaceChildren();
    body.dataset.torrent = String(t.id);
    files.forEach((f, i) => {
      const tr = el('tr', null, { 'data-index': String(i) });
      const want = el('input', null, { type: 'checkbox', 'aria-label': 'Download ' + f.name });
      want.addEventListener('change', () =>
        setFile(t.id, i, (k) => ({ [want.checked ? 'files-wanted' : 'files-unwanted']: [k] })));
      const wantCell = cell('Want', null);
      wantCell.append(want);
      const priority = el('select', null, { 'aria-label': 'Priority of ' + f.name });
      for (const [value, label] of PRIORITIES) priority.append(new Option(label, String(value)));
      priority.addEventListener('change', () => {
        const key = { '-1': 'priority-low', '0': 'priority-normal', '1': 'priority-high' }[priority.value];
        setFile(t.id, i, (k) => ({ [key]: [k] }));
      });
      const priorityCell = cell('Priority', null);
      priorityCell.append(priority);
      tr.append(wantCell, cell('File', f.name), cell('Size', bytes(f.length), 'num'), cell('Done', '', 'num done'),
        priorityCell);
      body.append(tr);
    });
  }
  files.forEach((f, i) => {
    const tr = body.children[i];
    const s = stats[i] || { bytesCompleted: f.bytesCompleted, wanted: true, priority: 0 };
    const want = tr.querySelector('input');
    if (document.activeElement !== want) want.checked = s.wanted;
    const priority = tr.querySelector('select');
    if (document.activeElement !== priority) priority.value = String(s.priority);
    tr.querySelector('.done').textContent = f.length ? ((f.bytesCompleted / f.length) * 100).toFixed(1) + '%' : '100%';
  });
}

function renderPeers(t) {
  const body = $('peers').tBodies[0];
  const peers = t.peers || [];
  body.replaceChildren(...peers.map((p) => {
    const tr = el('tr');
    tr.append(cell('Address', `${p.address}:${p.port}`, 'mono'), cell('Client', p.clientName),
      cell('Progress', (p.progress * 100).toFixed(1) + '%', 'num'), cell('Down', rate(p.rateToClient), 'num'),
      cell('Up', rate(p.rateToPeer), 'num'), cell('Flags', p.flagStr, 'mono'));
    return tr;
  }));
  $('peers-empty').hidden = peers.length > 0;
}

function renderTrackers(t) {
  const body = $('trackers').tBodies[0];
  const trackers = t.trackerStats || [];
  const now = Date.now() / 1000;
  body.replaceChildren(...trackers.map((k) => {
    const tr = el('tr');
    const result = k.lastAnnounceTime ? (k.lastAnnounceSucceeded ? 'OK' : k.lastAnnounceResult) : '';
    const next = k.nextAnnounceTime > now ? duration(k.nextAnnounceTime - now) : '';
    tr.append(cell('Tier', k.tier, 'num'), cell('Announce', k.announce), cell('Last result', result),
      cell('Peers', k.lastAnnouncePeerCount >= 0 ? k.lastAnnouncePeerCount : '', 'num'), cell('Next', next, 'num'));
    return tr;
  }));
}

async function refreshDetail() {
  if (selectedId === null) return;
  const id = selectedId;
  const reply = await rpc('torrent-get', { ids: [id], fields: DETAIL_FIELDS });
  const t = (reply.torrents || [])[0];
  if (!t || id !== selectedId) return;
  $('detail-name').textContent = t.name;
  $('detail-hash').textContent = t.hashString;
  renderFiles(t);
  renderPeers(t);
  renderTrackers(t);
}

// --- polling -------------------------------------------------------------------------------

let timer = null;

async function refresh() {
  const reply = await rpc('torrent-get', { fields: LIST_FIELDS });
  render(reply.torrents || []);
  showMessage('');
  if (selectedId !== null) await refreshDetail();
}

async function poll() {
  clearTimeout(timer);
  try {
    await refresh();
  } catch (e) {
    showMessage(e instanceof RpcError ? e.message : 'The daemon does not answer: ' + e.message);
  }
  timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
}

function wire() {
  $('add-open').addEventListener('click', () => { $('add-error').hidden = true; $('add-dialog').showModal(); });
  $('add-cancel').addEventListener('click', () => $('add-dialog').close());
  $('add-form').addEventListener('submit', submitAdd);
  $('remove-cancel').addEventListener('click', () => { removingId = null; $('remove-dialog').close(); });
  $('remove-form').addEventListener('submit', confirmRemove);
  $('limits-open').addEventListener('click', openLimits);
  $('limits-cancel').addEventListener('click', () => $('limits-dialog').close());
  $('limits-form').addEventListener('submit', saveLimits);
  $('detail-close').addEventListener('click', closeDetail);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) poll(); });
  poll();
}

wire();
