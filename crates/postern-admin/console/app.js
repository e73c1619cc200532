// Postern's web console. Plain JavaScript, no framework and nothing loaded from elsewhere.
//
// Safety rules this file keeps:
// - every value that comes from the API reaches the page through textContent or a text node,
//   never innerHTML; SQL is highlighted by tokenising it and building spans;
// - no token is ever seen here: the browser holds only an HttpOnly session cookie, and every
//   request that changes something carries the session's CSRF token in X-CSRF-Token;
// - no inline script or style (the content security policy forbids them).
'use strict';

const console_ = {
  session: null,
  tab: 'pending',
  selected: { pending: null, past: null },
  events: null,
  expiryTimer: null,
  refreshTimers: {},
};

// ---------------------------------------------------------------------------------------------
// DOM helpers

function $(id) {
  return document.getElementById(id);
}

// el('td', {class: 'x'}, 'text', otherNode): builds an element; strings become text nodes.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

// ---------------------------------------------------------------------------------------------
// Formatting

function fromUnix(seconds) {
  return typeof seconds === 'number' ? new Date(seconds * 1000) : null;
}

function fromAny(value) {
  if (typeof value === 'number') return fromUnix(value);
  if (typeof value === 'string') {
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? null : date;
  }
  return null;
}

function relative(date) {
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const magnitude = Math.abs(seconds);
  if (magnitude < 5) return 'just now';
  let text;
  if (magnitude < 45) text = `${magnitude}s`;
  else if (magnitude < 3600) text = `${Math.round(magnitude / 60)} min`;
  else if (magnitude < 86400 * 2) text = `${Math.round(magnitude / 3600)} h`;
  else text = `${Math.round(magnitude / 86400)} days`;
  return seconds < 0 ? `${text} ago` : `in ${text}`;
}

// A <time> element: local date and time, relative time in brackets.
function when(value) {
  const date = fromAny(value);
  if (!date) return el('span', { class: 'muted', text: '—' });
  return el('time', { datetime: date.toISOString(), title: date.toISOString() },
    `${date.toLocaleString()} (${relative(date)})`);
}

function duration(seconds) {
  if (typeof seconds !== 'number') return '—';
  if (seconds % 86400 === 0 && seconds >= 86400) return `${seconds / 86400} d`;
  if (seconds % 3600 === 0 && seconds >= 3600) return `${seconds / 3600} h`;
  if (seconds % 60 === 0 && seconds >= 60) return `${seconds / 60} min`;
  return `${seconds} s`;
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function stateBadge(state) {
  return el('span', { class: `badge state-${String(state)}`, text: state });
}

function firstLine(text, max) {
  const line = String(text || '').replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

// ---------------------------------------------------------------------------------------------
// SQL highlighting: a small PostgreSQL tokeniser; each token becomes a span with a class.

const SQL_KEYWORDS = new Set(`
  all alter analyze and any array as asc begin between by call cascade case cast check close
  cluster collate column comment commit conflict constraint copy create cross current_user
  cursor database deallocate declare default delete desc discard distinct do domain drop else
  end except execute exists explain extension false fetch filter first for foreign from full
  function grant group having if ilike in index inner insert intersect into is join key
  language last lateral left like limit listen lock materialized move natural not nothing
  notify null nulls offset on only or order outer over owner partition prepare primary
  procedure reassign recursive references refresh reindex release replace reset restrict
  returning returns revoke right role rollback savepoint schema select sequence session_user
  set show some table temp temporary then to transaction trigger true truncate type union
  unique unlisten update user using vacuum values view when where window with within
`.trim().split(/\s+/));

const SQL_RULES = [
  ['space', /\s+/y],
  ['comment', /--[^\n]*/y],
  ['comment', /\/\*[\s\S]*?(?:\*\/|$)/y],
  ['string', /[eE]'(?:[^'\\]|\\[\s\S]|'')*(?:'|$)/y],
  ['string', /'(?:[^']|'')*(?:'|$)/y],
  ['string', /\$([A-Za-z_][A-Za-z_0-9]*)?\$[\s\S]*?(?:\$\1\$|$)/y],
  ['param', /\$\d+/y],
  ['ident', /"(?:[^"]|"")*(?:"|$)/y],
  ['number', /(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/y],
  ['word', /[A-Za-z_\u0080-\uffff][A-Za-z_0-9$\u0080-\uffff]*/y],
  ['op', /::|<=|>=|<>|!=|\|\||[-+*/<>=~!@#%^&|`?.,;:()[\]{}]/y],
  ['other', /[\s\S]/y],
];

function tokenizeSql(text) {
  const tokens = [];
  let at = 0;
  while (at < text.length) {
    for (const [type, rule] of SQL_RULES) {
      rule.lastIndex = at;
      const match = rule.exec(text);
      if (match && match[0].length > 0) {
        let kind = type;
        if (type === 'word') kind = SQL_KEYWORDS.has(match[0].toLowerCase()) ? 'keyword' : 'name';
        tokens.push({ kind, text: match[0] });
        at += match[0].length;
        break;
      }
    }
  }
  return tokens;
}

function sqlBlock(text) {
  const code = el('code');
  for (const token of tokenizeSql(String(text || ''))) {
    if (token.kind === 'space') code.append(document.createTextNode(token.text));
    else code.append(el('span', { class: `sql-${token.kind}`, text: token.text }));
  }
  return el('pre', { class: 'sql' }, code);
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') {
    headers['X-CSRF-Token'] = console_.session ? console_.session.csrf_token : '';
  }
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      redirect: 'error',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, `Postern cannot be reached (${error.message}).`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    let message = `HTTP ${response.status} ${response.statusText}`.trim();
    if (data && typeof data.error === 'string') message = data.error;
    else if (response.status === 404) {
      message = `This Postern's admin API has no ${path.split('?')[0]} (HTTP 404).`;
    }
    if (response.status === 401 && path !== '/console/session') signedOut(message);
    throw new ApiError(response.status, message);
  }
  return data;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && String(value).trim() !== '') {
      search.set(key, String(value).trim());
    }
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

// ---------------------------------------------------------------------------------------------
// Errors

function showError(message) {
  $('error-text').textContent = message;
  show($('error'), true);
}

function panelError(name, error) {
  const node = $(`${name}-error`);
  if (!error) {
    show(node, false);
    return;
  }
  node.textContent = error.message || String(error);
  show(node, true);
}

// ---------------------------------------------------------------------------------------------
// Signing in and out

function signedOut(reason) {
  console_.session = null;
  if (console_.events) {
    console_.events.close();
    console_.events = null;
  }
  clearTimeout(console_.expiryTimer);
  show($('app'), false);
  show($('who'), false);
  show($('loading'), false);
  if (reason) $('signin-reason').textContent = reason;
  show($('signin'), true);
}

function signedIn(session) {
  console_.session = session;
  $('subject').textContent = session.subject;
  $('groups').textContent = session.groups && session.groups.length
    ? `(${session.groups.join(', ')})` : '';
  const expires = fromUnix(session.expires_at);
  $('expiry').textContent = expires ? `until ${expires.toLocaleTimeString()}` : '';
  clearTimeout(console_.expiryTimer);
  if (expires) {
    const wait = Math.max(0, expires.getTime() - Date.now());
    console_.expiryTimer = setTimeout(
      () => signedOut('Your session ended with your token. Sign in again to go on.'),
      Math.min(wait, 2147483647));
  }
  show($('loading'), false);
  show($('signin'), false);
  show($('who'), true);
  show($('app'), true);
  listen();
  selectTab(console_.tab);
}

async function signOut() {
  try {
    await api('POST', '/console/logout');
  } catch (error) {
    showError(`Signing out failed: ${error.message}`);
    return;
  }
  signedOut('You are signed out.');
}

// ---------------------------------------------------------------------------------------------
// Live updates

function setLive(state, title) {
  const node = $('live');
  node.className = `live ${state}`;
  node.textContent = state === 'on' ? 'live' : state === 'off' ? 'offline' : 'reconnecting';
  node.title = title;
}

function listen() {
  if (console_.events || typeof EventSource === 'undefined') return;
  const events = new EventSource('/v1/events');
  console_.events = events;
  setLive('wait', 'Connecting to live updates…');
  events.addEventListener('open', () => setLive('on', 'Live updates are on'));
  events.addEventListener('request', (event) => {
    let request;
    try {
      request = JSON.parse(event.data);
    } catch {
      return;
    }
    requestChanged(request);
  });
  // The server skipped events this page was too slow to take: read everything again.
  events.addEventListener('lagged', () => {
    scheduleRefresh('pending');
    if (console_.tab === 'past') scheduleRefresh('past');
  });
  events.addEventListener('error', () => {
    if (events.readyState === EventSource.CLOSED) {
      // The server refused the stream (signed out, or no such endpoint): check the session,
      // then try again in a while.
      console_.events = null;
      setLive('off', 'Live updates are off; retrying');
      setTimeout(async () => {
        try {
          await api('GET', '/console/session');
          if (console_.session) listen();
        } catch (error) {
          if (error.status === 401) signedOut('Your console session has ended. Sign in again.');
        }
      }, 5000);
    } else {
      setLive('wait', 'Live updates interrupted; reconnecting');
    }
  });
}

function requestChanged(request) {
  scheduleRefresh('pending');
  if (console_.tab === 'past') scheduleRefresh('past');
  for (const tab of ['pending', 'past']) {
    if (console_.selected[tab] === request.id) renderDetail(tab, request);
  }
}

function scheduleRefresh(name) {
  clearTimeout(console_.refreshTimers[name]);
  console_.refreshTimers[name] = setTimeout(() => load(name), 250);
}

// ---------------------------------------------------------------------------------------------
// Tabs

function selectTab(name) {
  console_.tab = name;
  for (const button of document.querySelectorAll('[role="tab"]')) {
    button.setAttribute('aria-selected', String(button.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll('[role="tabpanel"]')) {
    show(panel, panel.id === `panel-${name}`);
  }
  load(name);
}

function load(name) {
  if (!console_.session) return Promise.resolve();
  switch (name) {
    case 'pending': return loadRequests('pending');
    case 'past': return loadRequests('past');
    case 'sessions': return loadSessions();
    case 'audit': return loadAudit();
    case 'webhooks': return loadWebhooks();
    default: return Promise.resolve();
  }
}

// ---------------------------------------------------------------------------------------------
// Requests

const PAST_STATES = ['approved', 'denied', 'withdrawn', 'expired'];

async function fetchRequests(tab) {
  if (tab === 'pending') {
    const data = await api('GET', `/v1/requests${query({ state: 'pending', limit: 200 })}`);
    return data.requests || [];
  }
  const chosen = $('past-state').value;
  const states = chosen ? [chosen] : PAST_STATES;
  const lists = await Promise.all(states.map((state) =>
    api('GET', `/v1/requests${query({ state, limit: 100 })}`)
      .then((data) => data.requests || [])));
  return lists.flat().sort((a, b) => (b.decided_at || b.created_at) - (a.decided_at || a.created_at));
}

async function loadRequests(tab) {
  let requests;
  try {
    requests = await fetchRequests(tab);
    panelError(tab, null);
  } catch (error) {
    panelError(tab, error);
    return;
  }
  const list = $(`${tab}-list`);
  list.replaceChildren(...requests.map((request) => requestItem(tab, request)));
  show($(`${tab}-empty`), requests.length === 0);
  if (tab === 'pending') $('pending-count').textContent = requests.length ? String(requests.length) : '';
  const selected = console_.selected[tab];
  if (selected && !requests.some((r) => r.id === selected) && tab === 'pending') {
    // Decided while we looked: keep it open, the detail says what became of it.
    return;
  }
  if (!selected && requests.length === 1 && tab === 'pending') openRequest(tab, requests[0].id);
}

function approvalsNeeded(request) {
  const requirements = request.requirements || [];
  const approvals = (request.votes || []).filter((v) => v.verdict === 'approve').length;
  const needed = requirements.reduce((sum, r) => sum + (r.approvers || 0), 0);
  return needed ? `${approvals}/${needed} approvals` : `${approvals} approvals`;
}

function requestItem(tab, request) {
  const item = el('li', { class: console_.selected[tab] === request.id ? 'selected' : '' },
    el('button', {
      type: 'button',
      class: 'request',
      'data-request-id': request.id,
      onclick: () => openRequest(tab, request.id),
    },
    el('span', { class: 'line' },
      el('strong', { text: request.requester_subject }),
      el('span', { class: 'muted', text: ` on ${request.target} as ${request.role}` }),
      stateBadge(request.state)),
    el('code', { class: 'statement', text: firstLine(request.statement, 120) }),
    el('span', { class: 'line muted' },
      `${relative(fromUnix(request.created_at) || new Date())} · ${approvalsNeeded(request)}`,
      request.reason ? ` · “${firstLine(request.reason, 60)}”` : '')));
  return item;
}

async function openRequest(tab, id) {
  console_.selected[tab] = id;
  for (const item of $(`${tab}-list`).children) {
    const button = item.querySelector('button');
    item.className = button && button.dataset.requestId === id ? 'selected' : '';
  }
  try {
    const data = await api('GET', `/v1/requests/${encodeURIComponent(id)}`);
    renderDetail(tab, data.request, true);
  } catch (error) {
    const slot = document.querySelector(`[data-detail-for="${tab}"]`);
    slot.replaceChildren(el('p', { class: 'inline-error', text: error.message }));
  }
}

function field(label, ...value) {
  return [el('dt', { text: label }), el('dd', {}, ...value)];
}

function requestBody(request) {
  const context = request.context && typeof request.context === 'object' ? request.context : {};
  const body = [];

  body.push(el('dl', { class: 'facts' },
    field('Who', el('strong', { text: request.requester_subject }),
      el('span', { class: 'muted', text: ` (${request.requester_issuer})` })),
    field('When', when(request.created_at)),
    request.state === 'pending' ? field('Lapses', when(request.expires_at)) : null,
    request.state === 'expired' ? field('Lapsed', when(request.expires_at)) : null,
    request.decided_at ? field('Decided', when(request.decided_at)) : null,
    field('From', request.client_ip || '—',
      context.application_name ? el('span', { class: 'muted', text: ` · ${context.application_name}` }) : null),
    field('Session', el('code', { text: request.session_id || '—' })),
    field('Target / role', el('code', { text: `${request.target} / ${request.role}` })),
    field('Reason', request.reason
      ? el('span', { text: request.reason })
      : el('span', { class: 'muted', text: 'none given' }))));

  body.push(el('h3', { text: 'Statement' }), sqlBlock(request.statement));
  if (request.fingerprint) {
    body.push(el('p', { class: 'muted small' }, 'Fingerprint ', el('code', { text: request.fingerprint })));
  }

  const actions = request.actions || [];
  if (actions.length) {
    body.push(el('h3', { text: 'What it does' }), el('ul', { class: 'plain' },
      actions.map((a) => el('li', {}, el('code', { text: a.action }), ' on ', el('code', { text: a.resource })))));
  }

  const requirements = request.requirements || [];
  body.push(el('h3', { text: 'Policy' }));
  if (requirements.length) {
    body.push(el('ul', { class: 'plain' }, requirements.map((r) => el('li', {},
      el('code', { text: r.policy }), ': ',
      `${plural(r.approvers, 'approver')} from `,
      el('strong', { text: r.group }),
      `, grant up to ${duration(r.grant_ttl_secs)}`,
      r.preview ? ', impact preview' : ''))));
  } else {
    body.push(el('p', { class: 'muted', text: 'No requirement recorded.' }));
  }

  body.push(el('h3', { text: 'Impact preview' }), previewBlock(request, requirements));

  const votes = request.votes || [];
  body.push(el('h3', { text: 'Votes' }));
  if (votes.length) {
    body.push(el('table', { class: 'votes' },
      el('thead', {}, el('tr', {}, ['Approver', 'Verdict', 'Comment', 'Grant', 'When'].map((h) => el('th', { text: h })))),
      el('tbody', {}, votes.map((v) => el('tr', {},
        el('td', {}, el('strong', { text: v.approver_subject }),
          v.approver_groups && v.approver_groups.length
            ? el('span', { class: 'muted', text: ` (${v.approver_groups.join(', ')})` }) : null),
        el('td', {}, stateBadge(v.verdict === 'approve' ? 'approved' : 'denied')),
        el('td', { text: v.comment || '' }),
        el('td', { text: v.verdict === 'approve'
          ? [v.scope, v.ttl_secs ? duration(v.ttl_secs) : null, v.budget ? plural(v.budget, 'run') : null]
            .filter(Boolean).join(', ')
          : '' }),
        el('td', {}, when(v.at)))))));
  } else {
    body.push(el('p', { class: 'muted', text: 'No vote yet.' }));
  }

  if (request.grant_id) {
    body.push(el('p', {}, 'Grant ', el('code', { text: request.grant_id })));
  }

  const known = new Set(['application_name']);
  const rest = Object.entries(context).filter(([key]) => !known.has(key));
  if (rest.length) {
    body.push(el('h3', { text: 'Context' }), el('dl', { class: 'facts' },
      rest.map(([key, value]) => field(key, el('code', {
        text: typeof value === 'string' ? value : JSON.stringify(value),
      })))));
  }
  return body;
}

function previewBlock(request, requirements) {
  const preview = request.preview;
  if (!preview) {
    const asked = requirements.some((r) => r.preview);
    return el('p', { class: 'muted', text: asked
      ? 'Not available yet.'
      : 'None: the policy does not ask for an impact preview.' });
  }
  if (preview.unavailable) {
    return el('p', { class: 'muted', text: `None: ${preview.unavailable}` });
  }
  return el('div', {},
    typeof preview.rows === 'number'
      ? el('p', {}, 'Would affect ', el('strong', { text: plural(preview.rows, 'row') }))
      : null,
    preview.plan ? el('pre', { class: 'plan', text: preview.plan }) : null);
}

// Renders a request into its tab's detail slot. A refresh (a live update) keeps what the
// approver has typed in the decision form.
function renderDetail(tab, request, fresh) {
  const slot = document.querySelector(`[data-detail-for="${tab}"]`);
  let article = slot.querySelector('article.detail');
  if (!article || article.dataset.requestId !== request.id || fresh) {
    article = $('detail-template').content.firstElementChild.cloneNode(true);
    article.dataset.requestId = request.id;
    slot.replaceChildren(article);
    const form = article.querySelector('form.decide');
    form.addEventListener('submit', (event) => event.preventDefault());
    form.querySelector('button.approve').addEventListener('click', () => decide(tab, request.id, 'approve', form));
    form.querySelector('button.deny').addEventListener('click', () => decide(tab, request.id, 'deny', form));
    limitTtl(form, request);
  }
  article.querySelector('.request-id').textContent = request.id;
  const badge = article.querySelector('.request-state');
  badge.className = `badge request-state state-${request.state}`;
  badge.textContent = request.state;
  article.querySelector('.detail-body').replaceChildren(...requestBody(request));
  const pending = request.state === 'pending';
  show(article.querySelector('form.decide'), pending);
  const note = article.querySelector('.decided-note');
  show(note, !pending);
  if (!pending) {
    note.textContent = request.decided_at
      ? `This request was ${request.state} ${relative(fromUnix(request.decided_at))}; nothing more to decide.`
      : `This request is ${request.state}.`;
  }
}

// Offers only the grant lengths every requirement allows.
function limitTtl(form, request) {
  const limits = (request.requirements || []).map((r) => r.grant_ttl_secs).filter((s) => typeof s === 'number');
  if (!limits.length) return;
  const max = Math.min(...limits);
  const seconds = { '15m': 900, '30m': 1800, '1h': 3600, '4h': 14400 };
  const select = form.elements.ttl;
  for (const option of select.options) option.disabled = seconds[option.value] > max;
  if (select.selectedOptions[0] && select.selectedOptions[0].disabled) {
    const allowed = [...select.options].filter((o) => !o.disabled);
    if (allowed.length) allowed[allowed.length - 1].selected = true;
  }
}

async function decide(tab, id, verdict, form) {
  const errorBox = form.querySelector('.decide-error');
  show(errorBox, false);
  const comment = form.elements.comment.value.trim();
  let body;
  if (verdict === 'deny') {
    if (!comment) {
      errorBox.textContent = 'Say why you deny it: the requester is shown your comment.';
      show(errorBox, true);
      form.elements.comment.focus();
      return;
    }
    body = { comment };
  } else {
    body = { ttl: form.elements.ttl.value, scope: form.elements.scope.value };
    if (comment) body.comment = comment;
    const budget = form.elements.budget.value.trim();
    if (budget) {
      const n = Number(budget);
      if (!Number.isInteger(n) || n < 1) {
        errorBox.textContent = 'The budget is a whole number of runs, at least 1 (or empty for no limit).';
        show(errorBox, true);
        return;
      }
      body.budget = n;
    }
  }
  const buttons = form.querySelectorAll('button');
  for (const button of buttons) button.disabled = true;
  try {
    const result = await api('POST', `/v1/requests/${encodeURIComponent(id)}/${verdict}`, body);
    renderDetail(tab, result.request, true);
    const flash = document.querySelector(`[data-detail-for="${tab}"] .flash`);
    if (flash) {
      flash.textContent = decisionMessage(result);
      show(flash, true);
    }
    load(tab);
  } catch (error) {
    errorBox.textContent = error.message;
    show(errorBox, true);
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

function decisionMessage(result) {
  if (result.outcome === 'recorded') return 'Your approval is recorded; the request needs more approvers.';
  if (result.outcome === 'denied') return 'You denied the request; the requester is told why.';
  const grant = result.grant;
  if (!grant) return 'Approved.';
  const until = fromUnix(grant.expires_at);
  return `Approved: grant ${grant.id} for ${grant.subject}`
    + (until ? `, until ${until.toLocaleString()}` : '')
    + (grant.budget ? `, ${plural(grant.budget, 'run')}` : '') + '.';
}

// ---------------------------------------------------------------------------------------------
// Sessions, audit, webhooks

function fillTable(name, rows) {
  $(`${name}-table`).tBodies[0].replaceChildren(...rows);
  show($(`${name}-empty`), rows.length === 0);
}

async function loadSessions() {
  try {
    const data = await api('GET', '/v1/sessions');
    panelError('sessions', null);
    fillTable('sessions', (data.sessions || []).map((s) => el('tr', {},
      el('td', {}, el('strong', { text: s.subject }), el('br'), el('span', { class: 'muted small', text: s.issuer })),
      el('td', {}, el('code', { text: `${s.target} / ${s.role}` })),
      el('td', {}, s.client, s.application_name ? el('span', { class: 'muted', text: ` · ${s.application_name}` }) : null),
      el('td', {}, when(s.started_at)),
      el('td', {}, when(s.token_expires_at)),
      el('td', {}, el('span', { class: 'badge', text: typeof s.state === 'string' ? s.state : JSON.stringify(s.state) })),
      el('td', { text: `${s.statements}${s.refused ? ` (${s.refused} refused)` : ''}` }),
      el('td', {}, s.statement ? sqlBlock(firstLine(s.statement, 200)) : el('span', { class: 'muted', text: '—' })))));
  } catch (error) {
    panelError('sessions', error);
  }
}

function auditSummary(event) {
  const text = event.sql || event.statement || event.message || event.action || event.decision
    || event.end_reason || event.outcome || '';
  return typeof text === 'string' ? text : JSON.stringify(text);
}

async function loadAudit() {
  const params = {
    kind: $('audit-kind').value,
    subject: $('audit-subject').value,
    request: $('audit-request').value,
    limit: $('audit-limit').value,
  };
  try {
    const data = await api('GET', `/v1/audit${query(params)}`);
    panelError('audit', null);
    fillTable('audit', (data.events || []).map((event) => el('tr', {},
      el('td', {}, when(event.time)),
      el('td', {}, el('span', { class: 'badge', text: event.kind || '?' })),
      el('td', { text: event.subject || (event.caller && event.caller.subject) || '' }),
      el('td', { text: [event.target, event.role].filter(Boolean).join(' / ') }),
      el('td', {}, event.sql ? sqlBlock(firstLine(event.sql, 300)) : firstLine(auditSummary(event), 300)),
      el('td', {}, el('details', {}, el('summary', { text: 'all fields' }),
        el('pre', { class: 'json', text: JSON.stringify(event, null, 2) }))))));
  } catch (error) {
    panelError('audit', error);
  }
}

async function loadWebhooks() {
  try {
    const data = await api('GET', '/v1/webhooks/deliveries');
    panelError('webhooks', null);
    fillTable('webhooks', (data.deliveries || []).map((d) => el('tr', {},
      el('td', { text: d.group || '' }),
      el('td', { text: d.host || '' }),
      el('td', { text: d.event || '' }),
      el('td', {}, el('code', { text: d.request_id || '' })),
      el('td', { text: String(d.attempts ?? '') }),
      el('td', {}, stateBadge(d.delivered ? 'delivered' : 'undelivered')),
      el('td', { class: 'error-text', text: d.last_error || '' }))));
  } catch (error) {
    panelError('webhooks', error);
  }
}

// ---------------------------------------------------------------------------------------------
// Start

async function start() {
  for (const button of document.querySelectorAll('[role="tab"]')) {
    button.addEventListener('click', () => selectTab(button.dataset.tab));
  }
  for (const button of document.querySelectorAll('[data-refresh]')) {
    button.addEventListener('click', () => load(button.dataset.refresh));
  }
  $('past-state').addEventListener('change', () => load('past'));
  $('audit-form').addEventListener('submit', (event) => {
    event.preventDefault();
    loadAudit();
  });
  $('signout').addEventListener('click', signOut);
  $('error-close').addEventListener('click', () => show($('error'), false));

  let session;
  try {
    session = await api('GET', '/console/session');
  } catch (error) {
    if (error.status === 401) {
      signedOut(null);
    } else {
      show($('loading'), false);
      showError(error.message);
    }
    return;
  }
  signedIn(session);
}

start();
