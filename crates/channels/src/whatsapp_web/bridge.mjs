// pinch's WhatsApp Web bridge (decision 0055): Baileys on one side,
// newline-delimited JSON on stdio on the other. pinch writes a `start`
// line, then commands (send, react, typing, ack); this writes events
// (qr, connected, alive, message, reaction, result, logged_out, closed,
// error). Written by pinch into <data>/channels/whatsapp-web/bridge/ at
// every start; Baileys is the version `pinch channels whatsapp install`
// pinned. Everything here is pinch's own: no shell, no paths from the
// network (media files get names made here).
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import baileys, {
  Browsers,
  DisconnectReason,
  downloadMediaMessage,
  jidNormalizedUser,
  makeCacheableSignalKeyStore,
  normalizeMessageContent,
  useMultiFileAuthState
} from '@whiskeysockets/baileys'
import pino from 'pino'

const makeWASocket = baileys.default ?? baileys.makeWASocket ?? baileys
process.umask(0o077)

const emit = (ev) => process.stdout.write(JSON.stringify(ev) + '\n')
const logger = pino({ level: 'warn' }, pino.destination(2))
const plain = (f) => typeof f === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(f)
const MAX_TEXT = 65536

let cfg = null
let sock = null
let me = ''
let meLid = ''
const recent = new Map() // message id -> WAMessage (quotes, reactions, receipts)
const ours = new Set() // ids pinch sent: never relayed back
const remember = (m) => {
  if (!m?.key?.id) return
  recent.set(m.key.id, m)
  if (recent.size > 2000) recent.delete(recent.keys().next().value)
}

const spoolName = (chat, id) => createHash('sha256').update(`${chat}\n${id}`).digest('hex').slice(0, 40) + '.json'

function spool (ev, raw) {
  const file = path.join(cfg.spool, spoolName(ev.chat, ev.id))
  const fd = fs.openSync(file + '.tmp', 'w', 0o600)
  fs.writeSync(fd, JSON.stringify({ ev, key: raw.key }))
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  fs.renameSync(file + '.tmp', file)
}

function replaySpool () {
  for (const f of fs.readdirSync(cfg.spool).filter((f) => f.endsWith('.json')).sort()) {
    try {
      const { ev, key } = JSON.parse(fs.readFileSync(path.join(cfg.spool, f), 'utf8'))
      if (key?.id && !recent.has(key.id)) recent.set(key.id, { key })
      emit(ev)
    } catch (e) {
      emit({ ev: 'error', message: `unreadable spool entry ${f}: ${e.message}` })
    }
  }
}

function ack ({ chat, msg }) {
  const file = path.join(cfg.spool, spoolName(chat, msg))
  let key = recent.get(msg)?.key
  try {
    key = key ?? JSON.parse(fs.readFileSync(file, 'utf8')).key
  } catch {}
  fs.rmSync(file, { force: true })
  if (cfg.read_receipts && key && sock) sock.readMessages([key]).catch(() => {})
}

function textOf (c) {
  return c?.conversation ?? c?.extendedTextMessage?.text ?? c?.imageMessage?.caption ??
    c?.videoMessage?.caption ?? c?.documentMessage?.caption ?? c?.documentWithCaptionMessage?.message?.documentMessage?.caption ?? ''
}

const MEDIA = ['imageMessage', 'videoMessage', 'audioMessage', 'documentMessage', 'stickerMessage']

async function relay (m) {
  const chat = m.key.remoteJid
  if (!chat || chat === 'status@broadcast' || chat.endsWith('@newsletter') || ours.has(m.key.id)) return
  const c = normalizeMessageContent(m.message)
  if (!c) return
  const self = chat === me || chat === meLid
  if (m.key.fromMe && !self) return // the owner writing to others from the phone
  if (c.reactionMessage) {
    emit({ ev: 'reaction', chat, msg: c.reactionMessage.key?.id ?? '', emoji: c.reactionMessage.text ?? '' })
    return
  }
  if (c.protocolMessage || c.senderKeyDistributionMessage && Object.keys(c).length === 1) return
  const group = chat.endsWith('@g.us')
  const sender = m.key.fromMe ? me : jidNormalizedUser(group ? m.key.participant : chat)
  const kind = MEDIA.find((k) => c[k]) ?? (c.documentWithCaptionMessage ? 'documentWithCaptionMessage' : null)
  const inner = kind === 'documentWithCaptionMessage' ? c.documentWithCaptionMessage.message.documentMessage : kind && c[kind]
  const ctx = (inner ?? c.extendedTextMessage)?.contextInfo
  const mine = [me, meLid].filter(Boolean)
  const ev = {
    ev: 'message',
    chat,
    id: m.key.id,
    sender,
    name: m.pushName ?? null,
    text: textOf(c).slice(0, MAX_TEXT),
    mentioned: !!(ctx?.mentionedJid?.some((j) => mine.includes(jidNormalizedUser(j))) ||
      (ctx?.participant && mine.includes(jidNormalizedUser(ctx.participant)))),
    quoted: ctx?.stanzaId ?? null,
    media: null
  }
  if (inner) {
    const size = Number(inner.fileLength ?? 0)
    const media = { file: null, name: inner.fileName ?? kind.replace('Message', ''), mime: inner.mimetype ?? null, size }
    if (size <= cfg.max_bytes) {
      try {
        const buf = await downloadMediaMessage(m, 'buffer', {}, { logger, reuploadRequest: sock.updateMediaMessage })
        if (buf.length <= cfg.max_bytes) {
          media.file = 'in-' + randomBytes(8).toString('hex')
          fs.writeFileSync(path.join(cfg.media, media.file), buf, { mode: 0o600 })
          media.size = buf.length
        }
      } catch (e) {
        emit({ ev: 'error', message: `media of ${m.key.id} not downloaded: ${e.message}` })
      }
    }
    ev.media = media
  }
  spool(ev, m)
  emit(ev)
}

async function command (c) {
  const done = (r) => emit({ ev: 'result', id: c.id, ...r })
  try {
    if (!sock) return done({ ok: false, error: 'not connected' })
    if (c.op === 'send') {
      let content = { text: c.text }
      if (c.file) {
        if (!plain(c.file.file)) return done({ ok: false, permanent: true, error: 'odd file name' })
        const p = path.join(cfg.media, c.file.file)
        const data = fs.readFileSync(p)
        fs.rmSync(p, { force: true })
        const mime = c.file.mime || 'application/octet-stream'
        const caption = c.text || undefined
        if (mime.startsWith('image/')) content = { image: data, caption, mimetype: mime }
        else if (mime.startsWith('video/')) content = { video: data, caption, mimetype: mime }
        else if (mime.startsWith('audio/')) content = { audio: data, mimetype: mime }
        else content = { document: data, fileName: c.file.name, mimetype: mime, caption }
      }
      ours.add(c.msg_id)
      const quoted = c.quote ? recent.get(c.quote) : undefined
      const sent = await sock.sendMessage(c.to, content, { messageId: c.msg_id, quoted: quoted?.message ? quoted : undefined })
      remember(sent)
      return done({ ok: true, msg_id: sent?.key?.id ?? c.msg_id })
    }
    if (c.op === 'react') {
      const key = recent.get(c.msg)?.key ?? { remoteJid: c.to, id: c.msg, fromMe: ours.has(c.msg) }
      await sock.sendMessage(c.to, { react: { text: c.emoji, key } })
      return done({ ok: true })
    }
    if (c.op === 'typing') {
      await sock.sendPresenceUpdate('composing', c.to)
      return done({ ok: true })
    }
    return done({ ok: false, permanent: true, error: `unknown op ${c.op}` })
  } catch (e) {
    const code = e?.output?.statusCode
    done({ ok: false, permanent: code === 400 || code === 404 || code === 403, error: String(e?.message ?? e) })
  }
}

async function connect () {
  const { state, saveCreds } = await useMultiFileAuthState(cfg.session)
  sock = makeWASocket({
    auth: { creds: state.creds, keys: makeCacheableSignalKeyStore(state.keys, logger) },
    logger,
    browser: Browsers.ubuntu('Chrome'),
    markOnlineOnConnect: false,
    syncFullHistory: false,
    getMessage: async (key) => recent.get(key.id)?.message ?? undefined
  })
  sock.ev.on('creds.update', saveCreds)
  sock.ev.on('connection.update', async (u) => {
    if (u.qr) {
      if (cfg.link) emit({ ev: 'qr', code: u.qr })
      else {
        emit({ ev: 'logged_out', reason: 'the session is not linked' })
        process.exit(0)
      }
    }
    if (u.connection === 'open') {
      me = jidNormalizedUser(sock.user?.id ?? '')
      meLid = jidNormalizedUser(sock.user?.lid ?? '')
      emit({ ev: 'connected', me })
      if (cfg.link) {
        await saveCreds()
        setTimeout(() => process.exit(0), 3000)
      } else replaySpool()
    }
    if (u.connection === 'close') {
      const code = u.lastDisconnect?.error?.output?.statusCode
      sock = null
      if (code === DisconnectReason.restartRequired) return connect().catch(fatal)
      if (code === DisconnectReason.loggedOut) {
        emit({ ev: 'logged_out', reason: `WhatsApp closed the session (${code})` })
        process.exit(0)
      }
      emit({ ev: 'closed', reason: `${u.lastDisconnect?.error?.message ?? 'closed'} (${code ?? '?'})` })
      process.exit(1)
    }
  })
  sock.ev.on('messages.upsert', async ({ messages, type }) => {
    // `notify`: new messages, offline ones included; `append` is history
    // and the owner's other devices, never a message for pinch.
    if (cfg.link || type !== 'notify') return
    for (const m of messages) {
      remember(m)
      try {
        await relay(m)
      } catch (e) {
        emit({ ev: 'error', message: `message ${m.key?.id} not relayed: ${e.message}` })
      }
    }
  })
}

function fatal (e) {
  emit({ ev: 'closed', reason: String(e?.message ?? e) })
  process.exit(1)
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
lines.on('line', (line) => {
  let c
  try {
    c = JSON.parse(line)
  } catch {
    return emit({ ev: 'error', message: 'a line from pinch that is not JSON' })
  }
  if (!cfg) {
    if (c.op !== 'start') return fatal('the first line must be start')
    cfg = c
    setInterval(() => emit({ ev: 'alive' }), Math.max(25, cfg.alive_ms)).unref()
    return connect().catch(fatal)
  }
  if (c.op === 'ack') return ack(c)
  command(c)
})
lines.on('close', () => process.exit(0))
