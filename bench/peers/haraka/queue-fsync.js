// Haraka queue plugin for the accept benchmark (bench/haraka.ts copies it into
// the generated Haraka directory as plugins/queue-fsync.js). CommonJS in
// Haraka's plugin sandbox: `exports` is the plugin, OK / DENYSOFT are globals.
//
// Each message is streamed (transaction.message_stream.pipe, no buffering
// here) into <dir>/tmp/<uuid>, which is fsynced before close (write stream
// `flush: true`), renamed into <dir>/new/<uuid>, and <dir>/new is fsynced;
// only then next(OK), i.e. the client's 250. That is Maildir's write, fsync,
// rename, directory fsync, as Tern's spool and Maildir do. Directory fsyncs
// are shared by the messages waiting at the same time (group commit, as
// Tern's DirSync does): one starts when none is running, and every rename
// that lands while one runs waits for the next.
//
// config/queue-fsync.ini, [main]:
//   dir    queue directory (required)
//   fsync  false to skip both fsyncs (default true)
//   rdns   true to keep Haraka's reverse DNS lookup of the client (default
//          false: answered here as "unknown", like Postfix's
//          smtpd_peername_lookup = no)
//   dns    host:port of the DNS server for Haraka's lookups (default: the
//          system's)

const fs = require('node:fs')
const path = require('node:path')
const dns = require('node:dns')

exports.register = function () {
    const cfg = this.config.get('queue-fsync.ini', { booleans: ['+main.fsync', '-main.rdns'] })
    const dir = cfg.main.dir
    if (!dir) throw new Error('queue-fsync: config/queue-fsync.ini needs dir=')
    this.tmp_dir = path.join(dir, 'tmp')
    this.new_dir = path.join(dir, 'new')
    fs.mkdirSync(this.tmp_dir, { recursive: true })
    fs.mkdirSync(this.new_dir, { recursive: true })
    this.fsync = cfg.main.fsync
    this.sync_new = this.fsync ? dirSyncer(this.new_dir) : (cb) => cb(null)
    if (cfg.main.dns) dns.setServers([cfg.main.dns])
    if (!cfg.main.rdns) this.register_hook('lookup_rdns', 'skip_rdns')
    this.register_hook('queue', 'write_message')
    this.register_hook('queue_outbound', 'write_message')
}

exports.skip_rdns = function (next) {
    next(OK, 'unknown')
}

exports.write_message = function (next, connection) {
    const txn = connection?.transaction
    if (!txn) return next()
    const name = txn.uuid
    const tmp = path.join(this.tmp_dir, name)
    const dest = path.join(this.new_dir, name)
    let finished = false
    const fail = (err) => {
        if (finished) return
        finished = true
        connection.logerror(this, `queue write failed: ${err.message}`)
        fs.unlink(tmp, () => {})
        next(DENYSOFT, 'Queue write failed')
    }
    // flush: fsync(2) the file before close(2); an fsync error is an 'error'.
    const ws = fs.createWriteStream(tmp, { flags: 'wx', mode: 0o600, flush: this.fsync })
    ws.on('error', fail)
    ws.on('close', () => {
        if (finished) return
        fs.rename(tmp, dest, (err) => {
            if (err) return fail(err)
            this.sync_new((err2) => {
                if (err2) return fail(err2)
                finished = true
                next(OK, `Queued as ${name}`)
            })
        })
    })
    txn.message_stream.pipe(ws)
}

/** fsync of one directory, shared by all callers waiting at the same time. */
function dirSyncer(dir) {
    const fd = fs.openSync(dir, 'r')
    let running = null // callbacks of the fsync in flight
    let waiting = null // callbacks for the one after it
    const start = (cbs) => {
        running = cbs
        fs.fsync(fd, (err) => {
            running = null
            if (waiting) {
                const w = waiting
                waiting = null
                start(w)
            }
            for (const cb of cbs) cb(err)
        })
    }
    return (cb) => {
        if (!running) start([cb])
        else (waiting ??= []).push(cb)
    }
}
