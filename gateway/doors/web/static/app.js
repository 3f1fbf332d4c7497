// The chat page: one WebSocket to /ws, JSON frames (docs/WEBSOCKET.md).
// Every text from the server is inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE_KEY = "chat.resume"; // {nick, token}: a resume token, never the password

const state = {
  ws: null, nick: "", loggedIn: false, convs: new Map(),
  // the conversation shown: kept across a reload, so its backlog is not counted unread
  current: sessionStorage.getItem("chat.current") || "#general",
  backoff: 500, reconnecting: false, wantToken: false, password: null, pending: null,
  outbox: [], // what the user sent while disconnected: sent after the next `ready`
  lastText: "", // the composer's last text: given back if the server refuses its frame (1009)
};
const MAX_LINE_BYTES = 4096; // the server's --max-line default: a longer text is refused
// What the user typed or clicked: kept while reconnecting and sent after the next `ready`.
const USER_FRAMES = new Set(["say", "send", "command", "join", "leave", "complain"]);
const LOGIN_FRAMES = new Set(["login", "resume"]); // the only frames before `ready`

// A name's identity, as the server's (NFKC, then case folded): `Alice` and `alice` are one.
// toLowerCase leaves the two letters apart that case folding maps to others (ß, ς).
function key(name) {
  return name.normalize("NFKC").toLowerCase().replace(/ß/g, "ss").replace(/ς/g, "σ");
}
// A chat's conversation id, as `messages` frames give it: `#` + the chat's key.
function chatId(name) { return "#" + key(name.replace(/^#/, "")); }

// Times in 24-hour HH:MM, the reader's time zone (telnet shows 24-hour too; README).
const two = (n) => String(n).padStart(2, "0");
function clock(d) { return `${two(d.getHours())}:${two(d.getMinutes())}`; }
function dateTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${clock(d)}`;
}

// -- banners ---------------------------------------------------------------------------
let bannerTimer = null;
function banner(text, kind = "", ms = 0) {
  const b = $("banner");
  b.textContent = text;
  b.className = kind;
  b.hidden = !text;
  clearTimeout(bannerTimer);
  if (text && ms) bannerTimer = setTimeout(() => { b.hidden = true; }, ms);
}

// -- conversations -----------------------------------------------------------------------
function conv(id, kind, name) {
  let c = state.convs.get(id);
  if (!c) {
    c = { id, kind, name, unread: 0, items: [], seen: new Set() };
    state.convs.set(id, c);
  } else if (name) {
    c.name = name;
  }
  return c;
}

function renderSidebar() {
  const chats = [...state.convs.values()].filter((c) => c.kind === "chat");
  chats.sort((a, b) => (a.id === "#general" ? -1 : b.id === "#general" ? 1 :
    a.name.localeCompare(b.name)));
  const privates = [...state.convs.values()].filter((c) => c.kind === "private");
  privates.sort((a, b) => a.name.localeCompare(b.name));
  fillList($("chats"), chats, (c) => "#" + c.name);
  fillList($("privates"), privates, (c) => c.name);
  const total = [...state.convs.values()].reduce((n, c) => n + c.unread, 0);
  document.title = total ? `(${total}) Chat` : "Chat";
  const badge = $("menu-unread");
  badge.hidden = !total;
  badge.textContent = String(total);
  badge.setAttribute("aria-label", `${total} unread`);
  const cur = state.convs.get(state.current);
  $("title").textContent = cur ? (cur.kind === "chat" ? "#" + cur.name : "@" + cur.name) : "";
  $("leave").hidden = !cur || cur.kind !== "chat" || cur.id === "#general";
  $("who").hidden = !cur || cur.kind !== "chat";
}

function fillList(ul, convs, label) {
  ul.replaceChildren(...convs.map((c) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = c.id === state.current ? "current" : "";
    const name = document.createElement("span");
    name.textContent = label(c);
    b.append(name);
    if (c.unread) {
      const u = document.createElement("span");
      u.className = "unread";
      u.textContent = String(c.unread);
      u.setAttribute("aria-label", `${c.unread} unread`);
      b.append(u);
    }
    b.addEventListener("click", () => open(c.id));
    li.append(b);
    return li;
  }));
}

// The conversation shown from now on, however it was chosen (a click, the join form, a
// typed /chats, a leave, another device): kept over a reload; who was online was the
// previous one's.
function makeCurrent(id) {
  state.current = id;
  sessionStorage.setItem("chat.current", id);
  $("online").textContent = "";
}

function open(id) {
  const c = state.convs.get(id);
  if (!c) return;
  makeCurrent(id);
  c.unread = 0;
  // a chat becomes the session's current one and its last messages follow; a private
  // conversation's last messages are asked for (both placed by id among those shown)
  if (c.kind === "chat") send({ type: "join", chat: c.id });
  else send({ type: "history", conv: c.id });
  renderMessages();
  renderSidebar();
  showSidebar(false);
  $("message").focus();
}

// -- the sidebar at phone width: collapsed under a button, opened on demand -------------------
function showSidebar(open) {
  $("chat-view").classList.toggle("sidebar-open", open);
  $("menu-toggle").setAttribute("aria-expanded", String(open));
}
function narrow() { return window.matchMedia("(max-width: 640px)").matches; }

// -- messages ------------------------------------------------------------------------------
const URL_RE = /\bhttps?:\/\/[^\s<>"']+/g;

function textWithLinks(text) {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    frag.append(document.createTextNode(text.slice(last, m.index)));
    let url = null;
    try { url = new URL(m[0]); } catch { url = null; }
    if (url && (url.protocol === "http:" || url.protocol === "https:")) {
      const a = document.createElement("a");
      a.href = url.href;
      a.textContent = m[0];
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
      frag.append(a);
    } else {
      frag.append(document.createTextNode(m[0]));
    }
    last = m.index + m[0].length;
  }
  frag.append(document.createTextNode(text.slice(last)));
  return frag;
}

function messageItem(item) {
  const li = document.createElement("li");
  li.dataset.id = item.id || "";
  if (item.note) {
    li.className = item.note;
    li.textContent = item.text;
    return li;
  }
  if (key(item.from) === key(state.nick)) li.className = "own";
  const t = document.createElement("time");
  const when = new Date(item.ts);
  t.dateTime = when.toISOString();
  t.textContent = clock(when);
  t.title = dateTime(item.ts);
  const from = document.createElement("button");
  from.type = "button";
  from.className = "from";
  from.textContent = item.from;
  from.addEventListener("click", () => personMenu(item.from));
  const text = document.createElement("span");
  text.className = "text";
  text.append(textWithLinks(item.text));
  li.append(t, from, text);
  return li;
}

function renderMessages() {
  const c = state.convs.get(state.current);
  $("messages").replaceChildren(...(c ? c.items.map(messageItem) : []));
  scrollDown();
}

function scrollDown() { const m = $("log"); m.scrollTop = m.scrollHeight; }

// Where an item goes in its conversation. A message: its id (`ms-seq`, increasing within a
// conversation), so a backlog, a history and live messages interleave in time order
// whatever order they arrive in. A notice: right after what was there when it was made.
let notices = 0;
function place(c, item) {
  if (item.id) {
    const [ms, seq] = item.id.split("-");
    return [Number(ms), Number(seq || 0), 0];
  }
  const last = c.items[c.items.length - 1];
  return last ? [last.at[0], last.at[1], ++notices] : [0, 0, ++notices];
}
function before(a, b) {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}

const KEPT = 500; // items kept per conversation: the newest
/** "hour", "2 hours", "30 minutes", "90 s": how long messages are kept, in words. */
function lifetime(seconds) {
  const words = (n, unit) => (n === 1 ? unit : `${n} ${unit}s`);
  if (seconds % 3600 === 0) return words(seconds / 3600, "hour");
  if (seconds % 60 === 0) return words(seconds / 60, "minute");
  return `${seconds} s`;
}

function addItems(c, items) {
  const fresh = [];
  for (const i of items) {
    if (i.id) {
      if (c.seen.has(i.id)) continue; // each message once, however often it arrives
      c.seen.add(i.id);
    } else {
      const last = c.items[c.items.length - 1];
      if (last && !last.id && last.note === i.note && last.text === i.text) continue;
    }
    i.at = place(c, i);
    fresh.push(i);
  }
  if (!fresh.length) return;
  let appended = true;
  const empty = c.items.findIndex((i) => i.empty); // "no messages ..." is true no longer
  if (empty >= 0 && fresh.some((i) => i.id)) {
    c.items.splice(empty, 1);
    appended = false;
  }
  for (const i of fresh) {
    let at = c.items.length;
    while (at > 0 && before(i.at, c.items[at - 1].at)) at--;
    if (at !== c.items.length) appended = false;
    c.items.splice(at, 0, i);
  }
  if (c.items.length > KEPT) {
    c.items.splice(0, c.items.length - KEPT);
    appended = false;
  }
  if (c.id === state.current) {
    if (appended) {
      const list = $("messages");
      for (const i of fresh) list.append(messageItem(i));
      scrollDown();
    } else {
      renderMessages();
    }
  } else {
    c.unread += fresh.filter((i) => !i.note && key(i.from) !== key(state.nick)).length;
  }
  renderSidebar();
}

function note(text, kind = "notice") {
  const c = state.convs.get(state.current) || conv("#general", "chat", "general");
  addItems(c, [{ note: kind, text }]);
}

// -- the person menu -------------------------------------------------------------------------
let person = "";
function personMenu(nick) {
  person = nick;
  $("person-name").textContent = nick;
  $("person-private").hidden = key(nick) === key(state.nick);
  $("person-complain").hidden = key(nick) === key(state.nick);
  $("person-menu").hidden = false;
  (key(nick) === key(state.nick) ? $("person-close") : $("person-private")).focus();
}
function closeMenu() { $("person-menu").hidden = true; $("message").focus(); }

// -- the connection ---------------------------------------------------------------------------
function send(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN && (state.loggedIn ||
      LOGIN_FRAMES.has(frame.type))) {
    state.ws.send(JSON.stringify({ v: 1, ...frame }));
  } else if (USER_FRAMES.has(frame.type) && state.everReady) {
    state.outbox.push(frame); // typed while reconnecting: not lost
    note("not connected: will be sent after reconnecting");
  } // anything else (a history, who) is asked again when `ready` opens the conversation
}

function connect(first) {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws`);
  state.ws = ws;
  ws.addEventListener("open", () => { state.backoff = 500; if (first) first(); });
  ws.addEventListener("message", (e) => {
    let frame;
    try { frame = JSON.parse(e.data); } catch { return; }
    handle(frame);
  });
  ws.addEventListener("close", (e) => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (state.everReady) { // logged in before, not logged out: keep trying
      state.loggedIn = false;
      if (e.code === 1009) { // the server refused the last frame: give its text back
        const input = $("message");
        if (!input.value && state.lastText) input.value = state.lastText;
        banner("That was too long for the server (not sent); reconnecting…", "error");
      }
      else if (!state.kicked) banner("Connection lost; reconnecting…", "error");
      state.kicked = false;
      reconnectLater();
    }
  });
}

function reconnectLater() {
  const wait = state.backoff * (0.5 + Math.random() / 2);
  state.backoff = Math.min(state.backoff * 2, 10000);
  setTimeout(() => connect(resume), wait);
}

function resume() {
  const saved = loadSaved();
  if (saved) {
    state.reconnecting = true;
    state.nick = state.nick || saved.nick; // the backlog's own messages are not unread
    send({ type: "resume", nick: saved.nick, token: saved.token });
  } else if (state.pending) {
    send({ type: "login", nick: state.pending.nick, password: state.pending.password });
  } else {
    showLogin();
  }
}

function loadSaved() {
  try { return JSON.parse(localStorage.getItem(STORE_KEY) || "null"); } catch { return null; }
}

function showLogin(error = "") {
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = error;
  $("nick").focus();
}

// -- frames from the server --------------------------------------------------------------------
function handle(f) {
  switch (f.type) {
    case "ready": {
      const wasReconnect = state.everReady;
      state.loggedIn = true;
      state.everReady = true;
      state.reconnecting = false;
      state.nick = f.nick;
      $("me").textContent = f.nick;
      for (const name of f.chats || []) conv(chatId(name), "chat", name.slice(1));
      conv("#general", "chat", "general");
      for (const p of f.privates || []) conv(p.id, "private", p.name);
      $("login-view").hidden = true;
      $("chat-view").hidden = false;
      if (wasReconnect) banner("Reconnected", "ok", 3000); else banner("");
      renderSidebar();
      if (!loadSaved()) send({ type: "token" });
      const place = sessionStorage.getItem("chat.current");
      if (place && !state.convs.has(place) && place.startsWith("@")) {
        conv(place, "private", place.slice(1)); // written to, but no message yet
      }
      const target = state.convs.has(state.current) && state.current !== "#general"
        ? state.current : (place && state.convs.has(place) ? place : "#general");
      open(target);
      const queued = state.outbox.splice(0);
      for (const frame of queued) send(frame);
      break;
    }
    case "token":
      localStorage.setItem(STORE_KEY, JSON.stringify({ nick: state.nick, token: f.token }));
      state.pending = null; // the password is not kept once a token exists
      if (state.wantToken) { // typed /token: shown, as on telnet (the page's own stay hidden)
        state.wantToken = false;
        const days = Math.round(f.seconds / 86400);
        note(`token: ${f.token} (valid for ${days} days; log in elsewhere with ` +
          `'${state.nick} <token>'; this page uses it too; /logout revokes it)`);
      }
      break;
    case "messages": {
      const c = conv(f.conv.id, f.conv.kind, f.conv.name);
      addItems(c, f.items.map((i) => ({ id: i.id, ts: i.ts, from: i.from, text: i.text })));
      break;
    }
    case "joined": {
      const c = conv(chatId(f.chat), "chat", f.chat.slice(1));
      if (!f.already) note(`joined ${f.chat}`);
      renderSidebar();
      if (state.wantJoin && chatId(state.wantJoin) === c.id) {
        state.wantJoin = null;
        makeCurrent(c.id);
        renderMessages();
        renderSidebar();
      }
      break;
    }
    case "left":
      state.convs.delete(chatId(f.chat));
      if (state.current === chatId(f.chat)) { makeCurrent("#general"); renderMessages(); }
      note(`left ${f.chat}`);
      renderSidebar();
      break;
    case "current_chat": {
      const c = conv(chatId(f.chat), "chat", f.chat.slice(1));
      if (state.current !== c.id) {
        makeCurrent(c.id);
        renderMessages();
        renderSidebar();
      }
      break;
    }
    case "where":
      note(`current chat ${f.chat}; your chats: ${f.chats.join(", ")}`);
      break;
    case "ban_placed":
      note(`${f.nick} is banned until ${dateTime(f.until)}`);
      break;
    case "unbanned":
      note(f.was_banned ? `${f.nick} is no longer banned` : `${f.nick} was not banned`);
      break;
    case "kick_sent":
      note(`${f.nick} was disconnected`);
      break;
    case "ban_lifted":
      banner("Your ban was lifted: you can send again.", "", 8000);
      break;
    case "kicked":
      banner("You were disconnected by a moderator.", "error");
      state.kicked = true;
      break;
    case "chats": {
      const ul = $("chat-list");
      ul.hidden = false;
      ul.replaceChildren(...f.chats.map((c) => {
        const li = document.createElement("li");
        const label = document.createElement("span");
        const members = c.members === 1 ? "1 member" : `${c.members} members`;
        label.textContent = `${c.name}: ${members}, ${c.online} online`;
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = "Join";
        b.setAttribute("aria-label", `Join ${c.name}`);
        b.addEventListener("click", () => join(c.name));
        li.append(label);
        if (!state.convs.has(chatId(c.name))) li.append(b); // no Join for a chat you are in
        return li;
      }));
      if (!f.chats.length) {
        const li = document.createElement("li");
        li.textContent = "No active chats.";
        ul.replaceChildren(li);
      }
      break;
    }
    case "online": {
      const p = $("online");
      p.replaceChildren(document.createTextNode(`Online in ${f.chat} (${f.total}): `));
      f.names.forEach((n, i) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "from";
        b.textContent = n;
        b.addEventListener("click", () => personMenu(n));
        p.append(b);
        if (i < f.names.length - 1) p.append(document.createTextNode(", "));
      });
      if (f.total > f.names.length) p.append(` and ${f.total - f.names.length} more`);
      break;
    }
    case "no_history": {
      const c = f.conv ? conv(f.conv.id, f.conv.kind, f.conv.name)
        : state.convs.get(state.current);
      const where = f.conv && f.conv.kind === "private" ? `with ${f.conv.name}` : `in ${f.chat}`;
      const text = `no messages ${where} in the last ${lifetime(f.seconds)}`;
      if (c) addItems(c, [{ note: "notice", text, empty: true }]);
      break;
    }
    case "complained":
      note(`complaint about ${f.nick} recorded (${f.count}/${f.threshold})` +
        (f.banned_until ? `: ${f.nick} is banned until ${dateTime(f.banned_until)}` : ""));
      break;
    case "banned": {
      const why = f.by_moderator === true ? " by a moderator"
        : f.by_moderator === false ? " after complaints" : "";
      banner(`You are banned until ${dateTime(f.until)}${why}: ` +
        "you can read but not send.", "error");
      break;
    }
    case "help":
      for (const line of f.lines) note(line, "help");
      break;
    case "backlog_cut": {
      const c = conv(f.conv.id, f.conv.kind, f.conv.name);
      addItems(c, [{ note: "notice", text: "Older unread messages were not shown here." }]);
      break;
    }
    case "store_reset":
      banner("The chat store was reset; recent history may be missing.", "error", 10000);
      break;
    case "password_changed":
      note("password changed; every device must log in again");
      localStorage.removeItem(STORE_KEY);
      send({ type: "token" });
      break;
    case "shutting_down":
      banner("The server is restarting; reconnecting…", "error");
      break;
    case "bye":
      logOut(false);
      break;
    case "error":
      onError(f);
      break;
    default:
      break;
  }
}

function onError(f) {
  if (!state.loggedIn) {
    if (f.code === "bad_token") {
      localStorage.removeItem(STORE_KEY);
      if (state.ws) state.ws.close();
      state.ws = null;
      showLogin("Please log in again.");
      return;
    }
    state.pending = null;
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(); // a fresh connection for the next attempt
    showLogin(f.text);
    return;
  }
  if (f.code === "rate_limited") banner(`Slow down: ${f.text}`, "error", 5000);
  else if (f.code === "banned") banner(f.text, "error", 8000);
  else if (f.code === "store_down") banner(f.text, "error", 8000);
  else note(f.text, "error");
}

// -- user actions -----------------------------------------------------------------------------
function logOut(tellServer) {
  if (tellServer) send({ type: "logout" });
  localStorage.removeItem(STORE_KEY);
  sessionStorage.removeItem("chat.current");
  state.loggedIn = false;
  state.everReady = false; // a close from now on is not a drop to recover from
  state.convs.clear();
  state.outbox = [];
  state.current = "#general";
  $("messages").replaceChildren(); // nothing of this user stays in the page
  $("chats").replaceChildren();
  $("privates").replaceChildren();
  $("online").textContent = "";
  $("me").textContent = "";
  $("menu-unread").hidden = true;
  showSidebar(false);
  document.title = "Chat";
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  banner("");
  showLogin();
}

function join(name) {
  const chat = name.startsWith("#") ? name : "#" + name;
  state.wantJoin = chat;
  send({ type: "join", chat });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const nick = $("nick").value.trim();
    const password = $("password").value;
    $("login-error").textContent = "";
    state.pending = { nick, password };
    state.nick = nick;
    $("password").value = "";
    const go = () => send({ type: "login", nick, password });
    if (state.ws && state.ws.readyState === WebSocket.OPEN) go(); else connect(go);
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("message");
    const text = input.value.trim();
    if (!text) return;
    if (new TextEncoder().encode(text).length > MAX_LINE_BYTES) {
      banner(`Too long: a message has at most ${MAX_LINE_BYTES} bytes (not sent).`, "error", 6000);
      return;
    }
    input.value = "";
    state.lastText = text;
    const c = state.convs.get(state.current);
    const history = /^\/history(?:\s+(\d+))?$/i.exec(text);
    if (history && c) { // this conversation's, chat or private (the server checks n)
      send({ type: "history", conv: c.id, ...(history[1] ? { count: Number(history[1]) } : {}) });
    } else if (text.startsWith("/")) {
      if (/^\/token$/i.test(text)) state.wantToken = true;
      send({ type: "command", line: text });
    } else if (c && c.kind === "private") send({ type: "send", to: c.name, text });
    else send({ type: "say", chat: state.current, text });
  });
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("join-name").value.trim();
    if (name) join(name);
    $("join-name").value = "";
  });
  $("list-chats").addEventListener("click", () => send({ type: "chats" }));
  $("who").addEventListener("click", () => send({ type: "who", chat: state.current }));
  $("leave").addEventListener("click", () => send({ type: "leave", chat: state.current }));
  $("logout").addEventListener("click", () => logOut(true));
  $("person-private").addEventListener("click", () => {
    const c = conv("@" + key(person), "private", person);
    $("person-menu").hidden = true;
    open(c.id);
  });
  $("person-complain").addEventListener("click", () => {
    send({ type: "complain", nick: person });
    closeMenu();
  });
  $("person-close").addEventListener("click", closeMenu);
  $("menu-toggle").addEventListener("click", () => {
    const open = $("menu-toggle").getAttribute("aria-expanded") !== "true";
    showSidebar(open);
    if (open) ($("sidebar").querySelector("button.current") || $("logout")).focus();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (!$("person-menu").hidden) closeMenu();
    else if (narrow() && $("chat-view").classList.contains("sidebar-open")) {
      showSidebar(false);
      $("menu-toggle").focus();
    }
  });
  if (loadSaved()) connect(resume); else showLogin();
});
