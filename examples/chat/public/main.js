// The demo page: login, the served-by picture, session notes, chat and devices.
// Plain DOM: every piece of text from the server or from users goes in through
// textContent (see el()), never through innerHTML.

/** How often the page asks /api/me, so that the served-by picture stays live. */
const POLL_MS = 1_000
/** How often the devices list refreshes on its own (it also refreshes after each action). */
const DEVICES_MS = 5_000
/** While the store is down, how often the page retries. */
const RETRY_MS = 2_000
/** How many of the last requests the strip shows. */
const STRIP_LENGTH = 40
/** The most chat messages kept on the page. */
const MAX_MESSAGES = 200

const END_MESSAGES = {
  revoked: 'This device was signed out from another device.',
  expired: 'Your session expired. Please sign in again.',
  'logged-out': 'You are signed out.',
  unauthorized: 'Your session ended. Please sign in again.',
  ended: 'Your session ended. Please sign in again.',
}

const $ = (id) => document.getElementById(id)

/**
 * Creates an element. Children are elements or strings; strings become text nodes,
 * so user data can never become markup.
 *
 * @param {string} tag
 * @param {Record<string, string | boolean | ((event: Event) => void)>} [attributes]
 * @param {...(Node | string | null | undefined | false)} children
 */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === 'function') node.addEventListener(name.replace(/^on/, ''), value)
    else if (value === true) node.setAttribute(name, '')
    else if (value !== false && value !== undefined) node.setAttribute(name, String(value))
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    node.append(typeof child === 'string' ? document.createTextNode(child) : child)
  }
  return node
}

/** A stable colour slot (0–7) per node: node-1 → 0, node-2 → 1…; other names by hash. */
function nodeSlot(nodeId) {
  const number = /(\d+)$/.exec(nodeId)
  if (number) return (Number(number[1]) - 1) % 8
  let hash = 0
  for (const char of nodeId) hash = (hash * 31 + char.charCodeAt(0)) >>> 0
  return hash % 8
}

function nodeBadge(nodeId) {
  return el('span', { class: `node-badge slot-${nodeSlot(nodeId)}` }, nodeId)
}

// --- state -----------------------------------------------------------------

const state = {
  /** @type {{ id: string, name: string } | null} */
  user: null,
  /** @type {import('socket.io-client').Socket | null} */
  socket: null,
  /** Requests answered, per node. */
  served: new Map(),
  /** The nodes of the last requests, oldest first. */
  recent: [],
  timers: new Set(),
  /** While the outage banner shows: the timer that asks whether the store is back. */
  outageProbe: undefined,
  /** Texts this window sent and has not seen come back yet. */
  sent: new Set(),
  /** Bumped on every sign-in and sign-out, so that late answers of an old session are dropped. */
  generation: 0,
}

class StoreUnavailable extends Error {}
class SignedOut extends Error {}

// --- the API -----------------------------------------------------------------

/**
 * Calls the JSON API. Counts which node answered; a 503 shows the outage banner
 * and throws StoreUnavailable; a 401 (other than a failed login) ends the signed-in
 * view and throws SignedOut.
 */
async function api(method, path, body) {
  const generation = state.generation
  let response
  try {
    response = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
  } catch (error) {
    // Nothing answered at all (nginx is down, or the network is).
    showOutage(false)
    throw new StoreUnavailable(error.message)
  }
  const node = response.headers.get('x-served-by')
  if (node && generation === state.generation && state.user) countServed(node)
  const text = await response.text()
  let data
  try {
    data = text ? JSON.parse(text) : undefined
  } catch {
    data = undefined // an nginx error page: no JSON
  }
  if (response.status === 503 || response.status === 502 || response.status === 504) {
    showOutage(response.status === 503 && data?.error === 'store unavailable')
    throw new StoreUnavailable(data?.error ?? `HTTP ${response.status}`)
  }
  hideOutage()
  if (response.status === 401 && path !== '/api/login') {
    if (generation === state.generation && state.user) signedOut('unauthorized')
    throw new SignedOut('not signed in')
  }
  return { status: response.status, data }
}

function showOutage(store) {
  const banner = $('outage')
  banner.querySelector('strong').textContent = store
    ? 'The session store is unavailable.'
    : 'The cluster is not answering.'
  $('outage-detail').textContent = store
    ? 'The nodes cannot reach it, so they answer 503 instead of guessing who you are. This page keeps retrying and carries on when the store is back.'
    : 'No node answered. This page keeps retrying and carries on when one is back.'
  banner.hidden = false
  document.body.classList.add('degraded')
  // Signed in, the regular poll notices the recovery; signed out (the session may
  // have ended during the outage) nothing else would ask, so probe until it is over.
  state.outageProbe ??= setInterval(() => {
    if (!state.user) api('GET', '/api/me').catch(ignore)
  }, POLL_MS)
}

function hideOutage() {
  $('outage').hidden = true
  document.body.classList.remove('degraded')
  clearInterval(state.outageProbe)
  state.outageProbe = undefined
}

/** Runs `task` every `ms`, never two at once, until sign-out. */
function every(ms, task) {
  const generation = state.generation
  let timer
  const tick = async () => {
    try {
      await task()
    } catch (error) {
      if (!(error instanceof StoreUnavailable || error instanceof SignedOut)) console.warn(error)
    }
    if (generation !== state.generation) return
    timer = setTimeout(tick, ms)
    state.timers.add(timer)
  }
  timer = setTimeout(tick, ms)
  state.timers.add(timer)
}

function stopTimers() {
  for (const timer of state.timers) clearTimeout(timer)
  state.timers.clear()
}

// --- views -----------------------------------------------------------------

function show(view) {
  $('loading').hidden = view !== 'loading'
  $('login').hidden = view !== 'login'
  $('dashboard').hidden = view !== 'dashboard'
  $('who').hidden = view !== 'dashboard'
  document.body.dataset.view = view
}

async function boot() {
  show('loading')
  try {
    const { status, data } = await api('GET', '/api/me')
    if (status === 200) return signedIn(data.user)
    showLogin()
  } catch (error) {
    if (error instanceof SignedOut) return showLogin()
    // The store (or the whole cluster) is down: say so, and try again.
    setTimeout(boot, RETRY_MS)
  }
}

function showLogin(notice) {
  show('login')
  $('login-notice').hidden = !notice
  $('login-notice').textContent = notice ?? ''
  $('login-error').hidden = true
  $('username').focus()
}

function signedIn(user) {
  state.generation++
  state.user = user
  state.served.clear()
  state.recent = []
  $('who-name').textContent = user.name
  $('who-avatar').textContent = user.name.slice(0, 1)
  $('messages').replaceChildren()
  show('dashboard')
  renderServed()
  refreshNotes().catch(ignore)
  refreshDevices().catch(ignore)
  every(POLL_MS, () => api('GET', '/api/me'))
  every(DEVICES_MS, refreshDevices)
  connectChat().catch((error) => console.warn(error))
}

/** Leaves the signed-in view: stops polling, closes the chat, shows the login form. */
function signedOut(reason) {
  if (!state.user) return
  state.generation++
  state.user = null
  stopTimers()
  state.socket?.disconnect()
  state.socket = null
  setChatStatus('closed', 'closed')
  showLogin(END_MESSAGES[reason] ?? END_MESSAGES.unauthorized)
}

function ignore(error) {
  if (!(error instanceof StoreUnavailable || error instanceof SignedOut)) console.warn(error)
}

// --- login -----------------------------------------------------------------

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault()
  const button = event.submitter
  if (button) button.disabled = true
  try {
    const { status, data } = await api('POST', '/api/login', {
      username: $('username').value.trim(),
      password: $('password').value,
    })
    if (status === 200) {
      $('password').value = ''
      signedIn(data.user)
    } else {
      $('login-error').textContent = data?.error ?? 'Sign-in failed.'
      $('login-error').hidden = false
    }
  } catch (error) {
    ignore(error)
  } finally {
    if (button) button.disabled = false
  }
})

for (const account of document.querySelectorAll('.account')) {
  account.addEventListener('click', () => {
    $('username').value = account.dataset.user
    $('password').value = 'sessionmesh'
    $('password').focus()
  })
}

$('logout').addEventListener('click', async () => {
  try {
    await api('POST', '/api/logout')
  } catch (error) {
    ignore(error)
  }
  signedOut('logged-out')
})

// --- served by -------------------------------------------------------------

function countServed(node) {
  state.served.set(node, (state.served.get(node) ?? 0) + 1)
  state.recent.push(node)
  if (state.recent.length > STRIP_LENGTH) state.recent.shift()
  renderServed()
}

function renderServed() {
  const nodes = [...state.served.keys()].sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))
  const total = [...state.served.values()].reduce((sum, count) => sum + count, 0)
  const most = Math.max(1, ...state.served.values())
  const last = state.recent.at(-1)
  const requests = total === 1 ? '1 request' : `${total} requests`
  $('served-total').textContent = last ? `${requests} · last by ${last}` : requests
  $('bars').replaceChildren(
    ...nodes.map((node) => {
      const count = state.served.get(node) ?? 0
      const bar = el('span', { class: `bar-fill slot-${nodeSlot(node)}` })
      bar.style.width = `${Math.round((count / most) * 100)}%`
      return el(
        'div',
        { class: 'bar', 'data-node': node },
        el('span', { class: 'bar-label' }, node),
        el('span', { class: 'bar-track' }, bar),
        el('span', { class: 'bar-count' }, String(count)),
      )
    }),
  )
  $('strip').replaceChildren(
    ...state.recent.map((node) =>
      el('span', { class: `tick slot-${nodeSlot(node)}`, title: node }),
    ),
  )
}

// --- notes -----------------------------------------------------------------

async function refreshNotes() {
  const { data } = await api('GET', '/api/kv')
  const entries = Object.entries(data ?? {}).sort(([a], [b]) => a.localeCompare(b))
  $('kv').replaceChildren(
    ...entries.map(([key, value]) =>
      el(
        'li',
        {},
        el('span', { class: 'kv-key' }, key),
        el(
          'span',
          { class: 'kv-value' },
          typeof value === 'string' ? value : JSON.stringify(value),
        ),
      ),
    ),
  )
  $('kv-empty').hidden = entries.length > 0
}

$('kv-form').addEventListener('submit', async (event) => {
  event.preventDefault()
  const key = $('kv-key').value.trim()
  const value = $('kv-value').value
  $('kv-error').hidden = true
  try {
    const { status, data } = await api('PUT', `/api/kv/${encodeURIComponent(key)}`, value)
    if (status !== 200) {
      $('kv-error').textContent = data?.error ?? `Could not save (HTTP ${status}).`
      $('kv-error').hidden = false
      return
    }
    $('kv-key').value = ''
    $('kv-value').value = ''
    $('kv-key').focus()
    // Read back through the API: likely another node, which must see the write.
    await refreshNotes()
  } catch (error) {
    ignore(error)
  }
})

// --- chat ------------------------------------------------------------------

function setChatStatus(text, kind) {
  const status = $('chat-status')
  status.textContent = text
  status.dataset.kind = kind
  $('chat-text').disabled = kind !== 'open'
}

/**
 * The socket.io client, from the socket.io server. Loaded on demand: a demo run on a
 * store without a change feed (MySQL) has no chat, and the rest of the page must work.
 */
let socketIo
function loadSocketIo() {
  socketIo ??= import('/socket.io/socket.io.esm.min.js').then(
    (module) => module.io,
    () => null,
  )
  return socketIo
}

async function connectChat() {
  const generation = state.generation
  setChatStatus('connecting…', 'connecting')
  const io = await loadSocketIo()
  if (generation !== state.generation) return
  if (!io) {
    setChatStatus('off', 'closed')
    $('messages').dataset.empty =
      'The chat is off: this store publishes no session events, so a signed-out device could keep its socket. Run with Redis (the default) or --store tiered.'
    return
  }
  // WebSocket only: nginx balances without stickiness, and long-polling needs
  // every request of a connection to reach the same node.
  const socket = io({ transports: ['websocket'] })
  state.socket = socket
  socket.on('welcome', ({ node }) => {
    setChatStatus(`connected via ${node}`, 'open')
    $('chat-status').dataset.node = node
  })
  socket.on('chat', (message) => appendMessage(message))
  socket.on('session:ended', ({ reason }) => {
    if (generation === state.generation) signedOut(reason)
  })
  socket.on('disconnect', () => {
    if (generation === state.generation) setChatStatus('reconnecting…', 'connecting')
  })
  socket.on('connect_error', async (error) => {
    if (generation !== state.generation) return
    setChatStatus('reconnecting…', 'connecting')
    if (error.message === 'unauthorized') {
      // The server refused the session: ask the API whether it still exists (a 401 signs out).
      try {
        await api('GET', '/api/me')
      } catch (apiError) {
        ignore(apiError)
      }
      if (generation === state.generation) setTimeout(() => socket.connect(), RETRY_MS)
    }
  })
}

function formatTime(at) {
  return new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
}

/** A user id as a name: the chat sends ids ('alice'), the page shows names ('Alice'). */
function displayName(user) {
  const id = typeof user === 'string' ? user : (user?.name ?? user?.id ?? 'someone')
  return id.slice(0, 1).toUpperCase() + id.slice(1)
}

function appendMessage({ from, text, node, at }) {
  // Other windows of the same user get the same messages: only the ones this
  // window sent are drawn as its own.
  const mine = state.sent.delete(text)
  const list = $('messages')
  list.append(
    el(
      'li',
      { class: mine ? 'message mine' : 'message', 'data-node': node },
      el(
        'div',
        { class: 'message-meta' },
        el('span', { class: 'message-from' }, displayName(from)),
        nodeBadge(node),
        el('time', { datetime: new Date(at).toISOString() }, formatTime(at)),
      ),
      el('div', { class: 'message-text' }, text),
    ),
  )
  while (list.children.length > MAX_MESSAGES) list.firstElementChild?.remove()
  list.scrollTop = list.scrollHeight
}

$('chat-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const text = $('chat-text').value.trim()
  if (!text || !state.socket?.connected) return
  state.sent.add(text.slice(0, 500))
  if (state.sent.size > 20) state.sent.delete(state.sent.values().next().value)
  state.socket.emit('chat', { text })
  $('chat-text').value = ''
})

// --- devices ---------------------------------------------------------------

/** "Chrome 126 on macOS" from a user-agent string; good enough for a list of one's own devices. */
function describeAgent(agent) {
  if (!agent) return 'Unknown browser'
  const browsers = [
    [/Edg\/(\d+)/, 'Edge'],
    [/OPR\/(\d+)/, 'Opera'],
    [/Firefox\/(\d+)/, 'Firefox'],
    [/HeadlessChrome\/(\d+)/, 'Headless Chrome'],
    [/Chrome\/(\d+)/, 'Chrome'],
    [/Version\/(\d+)[^ ]* Safari/, 'Safari'],
    [/curl\/([\d.]+)/, 'curl'],
  ]
  const systems = [
    [/iPhone|iPad/, 'iOS'],
    [/Android/, 'Android'],
    [/Windows/, 'Windows'],
    [/Mac OS X|Macintosh/, 'macOS'],
    [/CrOS/, 'ChromeOS'],
    [/Linux/, 'Linux'],
  ]
  const browser = browsers.find(([pattern]) => pattern.test(agent))
  const system = systems.find(([pattern]) => pattern.test(agent))
  const name = browser
    ? `${browser[1]} ${browser[0].exec(agent)?.[1] ?? ''}`.trim()
    : agent.slice(0, 40)
  return system ? `${name} on ${system[1]}` : name
}

function ago(at) {
  const seconds = Math.max(0, Math.round((Date.now() - at) / 1000))
  if (seconds < 10) return 'just now'
  if (seconds < 60) return `${seconds} s ago`
  const minutes = Math.round(seconds / 60)
  if (minutes < 60) return `${minutes} min ago`
  const hours = Math.round(minutes / 60)
  if (hours < 24) return `${hours} h ago`
  return new Date(at).toLocaleDateString()
}

async function refreshDevices() {
  const { data } = await api('GET', '/api/sessions')
  // This device first, then the most recently seen.
  const sessions = [...(data?.sessions ?? [])].sort(
    (a, b) => Number(b.current) - Number(a.current) || b.lastSeenAt - a.lastSeenAt,
  )
  const others = sessions.filter((session) => !session.current).length
  $('revoke-others').disabled = others === 0
  $('device-list').replaceChildren(
    ...sessions.map((session) =>
      el(
        'li',
        { class: session.current ? 'device current' : 'device', 'data-handle': session.id },
        el('span', { class: 'device-icon', 'aria-hidden': 'true' }),
        el(
          'div',
          { class: 'device-body' },
          el(
            'div',
            { class: 'device-name' },
            describeAgent(session.userAgent),
            session.current && el('span', { class: 'pill' }, 'This device'),
          ),
          el(
            'div',
            { class: 'device-meta' },
            el('span', {}, session.ip ?? 'unknown IP'),
            el(
              'span',
              { title: new Date(session.createdAt).toLocaleString() },
              `signed in ${ago(session.createdAt)}`,
            ),
            el(
              'span',
              { title: new Date(session.lastSeenAt).toLocaleString() },
              `last seen ${ago(session.lastSeenAt)}`,
            ),
          ),
        ),
        el(
          'button',
          {
            type: 'button',
            class: 'button danger-ghost small',
            onclick: () => revokeDevice(session),
          },
          'Sign out',
        ),
      ),
    ),
  )
}

async function revokeDevice(session) {
  try {
    if (session.current) {
      await api('POST', '/api/logout')
      signedOut('logged-out')
      return
    }
    await api('DELETE', `/api/sessions/${encodeURIComponent(session.id)}`)
    await refreshDevices()
  } catch (error) {
    ignore(error)
  }
}

$('revoke-others').addEventListener('click', async () => {
  try {
    await api('POST', '/api/sessions/revoke-others')
    await refreshDevices()
  } catch (error) {
    ignore(error)
  }
})

boot()
