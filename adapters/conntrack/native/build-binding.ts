/**
 * Builds ctmigrate's netlink binding: the `netlink` package's own C++
 * socket binding, compiled from the package's source with these fixes:
 *
 * 1. An overrun (ENOBUFS) makes the kernel flag a socket error, which epoll
 *    reports as EPOLLERR; the package then builds an error with a NULL
 *    syscall name, which throws inside native code and aborts the whole
 *    process. Here the pending socket error is read (that clears it),
 *    reported as a normal ENOBUFS receive error, and the socket keeps
 *    working, so the feed can repair by a re-dump.
 * 2. Any other poll error is reported with a syscall name instead of NULL.
 * 3. `setRecvBufferForce(size)` (SO_RCVBUFFORCE): as root, an event socket
 *    can get a buffer beyond net.core.rmem_max without a host-wide sysctl.
 * 4. With a fixed receive size, up to 64 datagrams are read into one reused
 *    buffer and handed over as one Buffer of whole netlink messages: one
 *    copy and one callback per batch, instead of a fresh 64 KiB allocation
 *    and a callback per datagram (every event is its own datagram). The
 *    callback's info says whether the batch ended on an empty queue.
 * 5. send() goes to the kernel inside the call whenever nothing waits to be
 *    sent. The package also waited while the completion callbacks of
 *    earlier sends were still to run, so every other batch went out later
 *    from a timer: the writer threads' turn (kernel-turn.ts) is held around
 *    send() and must cover the kernel's work on the batch.
 *
 * 6. Teardown is safe while a send or receive is in flight. When a worker
 *    thread is terminated (or the process exits), Node stops its JavaScript
 *    and then runs the thread's loop once more; a poll or timer callback of
 *    an open socket then called into JavaScript, failed, and aborted the
 *    whole process (napi_fatal_error, or an uncaught Napi::Error). Here the
 *    callbacks first check that JavaScript can still run, and otherwise
 *    stop polling and close the socket without calling anything. A
 *    JavaScript callback that threw goes to Node's uncaught-exception path
 *    instead of std::terminate.
 * 7. The binding stays mapped until the process ends. A worker that ends
 *    unloads the addons it loaded, and only then runs its loop a last time
 *    to finish closing handles; a socket's poll or timer handle closed in
 *    that teardown had its close callback in the unloaded code, and the
 *    process died of SIGSEGV (seen at about 1 exit in 50 mid-create). The
 *    module marks itself RTLD_NODELETE when it loads.
 * 8. A method called by JavaScript (setRecvBufferSize, send, ...) that fails
 *    while the thread is torn down has nowhere to throw: node-addon-api then
 *    called std::terminate. It is built to drop such an error instead.
 *
 * Run by `npm run build` after tsc. Offline: it needs g++, make, python3 and
 * Node's headers (nodedir), and node-gyp from npm. If it cannot build, the
 * adapter falls back to the package's prebuilt binding and says so.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const OUT = resolve(__dirname, 'binding');

interface Patch {
  why: string;
  find: string;
  replace: string;
}

const PATCHES: Patch[] = [
  {
    why: 'overrun reported as EPOLLERR must not abort the process',
    find: `        if (status != 0) {
            auto error = ErrnoException(obj->Env(), -status, NULL, "error when polling socket");`,
    replace: `        if (status != 0 && obj->open) {
            int soerr = 0;
            socklen_t solen = sizeof(soerr);
            if (getsockopt(obj->fd, SOL_SOCKET, SO_ERROR, &soerr, &solen) == 0 && soerr != 0 && soerr != EBADF) {
                auto error = ErrnoException(obj->Env(), soerr, "recvmsg", "Error when receiving Netlink message");
                obj->error_callback.MakeCallback(obj->Value(), { error.Value() }, *obj->async_res);
                if (obj->open)
                    obj->watcher->start(obj->Env(), obj->write_queue.empty() ? UV_READABLE : (UV_READABLE | UV_WRITABLE), PollHandler);
                return;
            }
        }
        if (status != 0) {
            auto error = ErrnoException(obj->Env(), -status, "poll", "error when polling socket");`,
  },
  {
    why: 'SO_RCVBUFFORCE for event sockets',
    find: `            InstanceMethod<&Socket::SetRecvBufferSize>("setRecvBufferSize"),`,
    replace: `            InstanceMethod<&Socket::SetRecvBufferSize>("setRecvBufferSize"),
            InstanceMethod<&Socket::SetRecvBufferForce>("setRecvBufferForce"),`,
  },
  {
    why: 'SO_RCVBUFFORCE for event sockets',
    find: `    Napi::Value GetRecvBufferSize(const CallbackInfo& info) {`,
    replace: `    void SetRecvBufferForce(const CallbackInfo& info) {
        Napi::Env env = info.Env();
        int size = Napi::Number(env, info[0]);
        CheckOpen(env);
        if (size <= 0) size = 32768;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)))
            throw ErrnoException(env, errno, "setsockopt", "Couldn't force receive buffer size");
    }

    Napi::Value GetRecvBufferSize(const CallbackInfo& info) {`,
  },
  {
    why: 'batched receive',
    find: `    void Recvmsg() {
`,
    replace: `    void RecvBatch() {
        const size_t cap = msg_buffer * 8;
        if (!batch) batch = std::make_unique<char[]>(cap);
        size_t used = 0;
        int err = 0;
        bool drained = false;
        int count = 64;
        Napi::Env env = Env();
        while (count-- > 0 && fd != -1) {
            struct sockaddr_nl addr {};
            struct iovec iov {};
            struct msghdr hdr {};
            iov.iov_base = batch.get() + used;
            iov.iov_len = msg_buffer;
            hdr.msg_name = &addr;
            hdr.msg_namelen = sizeof(addr);
            hdr.msg_iov = &iov;
            hdr.msg_iovlen = 1;
            int size;
            do {
                size = recvmsg(fd, &hdr, MSG_TRUNC);
            } while (size == -1 && errno == EINTR);
            if (size == -1) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) drained = true;
                else err = errno;
                break;
            }
            if ((hdr.msg_flags & MSG_TRUNC) || (size & 3)) {
                // A cut or unaligned datagram travels alone, after the batch so far.
                if (!DeliverBatch(env, used, false)) return;
                used = 0;
                Napi::HandleScope scope (env);
                size_t got = std::min((size_t) size, msg_buffer);
                auto buf = Napi::Buffer<char>::Copy(env, batch.get(), got);
                auto rinfo = Napi::Object::New(env);
                rinfo["port"] = Napi::Number::New(env, addr.nl_pid);
                rinfo["groups"] = Napi::Number::New(env, addr.nl_groups);
                if (hdr.msg_flags & MSG_TRUNC) rinfo["truncated"] = Napi::Number::New(env, size);
                read_callback.MakeCallback(Value(), { buf, rinfo }, *async_res);
                continue;
            }
            used += size;
            if (cap - used < msg_buffer) break;
        }
        if (!DeliverBatch(env, used, drained)) return;
        if (err) {
            Napi::HandleScope scope (env);
            auto error = ErrnoException(env, err, "recvmsg", "Error when receiving Netlink message");
            error_callback.MakeCallback(Value(), { error.Value() }, *async_res);
        }
    }

    bool DeliverBatch(Napi::Env env, size_t used, bool drained) {
        if (used == 0 || fd == -1) return fd != -1;
        Napi::HandleScope scope (env);
        auto buf = Napi::Buffer<char>::Copy(env, batch.get(), used);
        auto rinfo = Napi::Object::New(env);
        rinfo["port"] = Napi::Number::New(env, 0);
        rinfo["groups"] = Napi::Number::New(env, 0);
        rinfo["drained"] = Napi::Boolean::New(env, drained);
        read_callback.MakeCallback(Value(), { buf, rinfo }, *async_res);
        return fd != -1;
    }

    std::unique_ptr<char[]> batch;

    void Recvmsg() {
        if (msg_buffer > 0) {
            RecvBatch();
            return;
        }
`,
  },
  {
    why: 'teardown while a receive is in flight',
    find: `    static void PollHandler(uv_poll_t* handle, int status, int events) {
        Socket* obj = static_cast<Socket*>(handle->data);
        Napi::HandleScope scope (obj->Env());`,
    replace: `    // Whether this thread can still run JavaScript: not once Node tears a
    // worker down or the process exits (it stops JavaScript first, then runs
    // the loop once more, and every call into JavaScript fails from then on).
    bool CanRunJs() {
        napi_value u;
        bool same = false;
        return napi_get_undefined(Env(), &u) == napi_ok && napi_strict_equals(Env(), u, u, &same) == napi_ok;
    }

    // Stop polling and close the socket without calling into JavaScript.
    void Quiesce() {
        if (!open) return;
        open = false;
        timer.reset();
        watcher.reset();
        fd.reset();
    }

    // A callback threw: JavaScript's own error goes to Node's uncaught-exception
    // path; a failure because JavaScript can no longer run just closes.
    void CallbackFailed(const Napi::Error& e) {
        processing = false;
        if (!CanRunJs()) return Quiesce();
        napi_fatal_exception(Env(), e.Value());
    }

    // Every call into JavaScript from a poll or timer callback. The thread may
    // be torn down while the callback runs (JavaScript is stopped from another
    // thread): then the call fails with no error object, and the socket closes
    // quietly. Returns whether the socket is still open.
    bool Invoke(const Napi::FunctionReference& fn, std::initializer_list<napi_value> args, napi_async_context context) {
        napi_env env = Env();
        napi_value result;
        if (napi_make_callback(env, context, Value(), fn.Value(), args.size(), args.begin(), &result) == napi_ok) return open;
        bool pending = false;
        napi_value exc;
        napi_valuetype type = napi_undefined;
        if (napi_is_exception_pending(env, &pending) == napi_ok && pending && napi_get_and_clear_last_exception(env, &exc) == napi_ok &&
            napi_typeof(env, exc, &type) == napi_ok && type == napi_object && CanRunJs()) {
            processing = false;
            napi_fatal_exception(env, exc);
            return open;
        }
        Quiesce();
        return false;
    }

    static void PollHandler(uv_poll_t* handle, int status, int events) {
        Socket* obj = static_cast<Socket*>(handle->data);
        if (!obj->CanRunJs()) return obj->Quiesce();
        try {
            obj->Polled(status, events);
        } catch (const Napi::Error& e) {
            obj->CallbackFailed(e);
        }
    }

    void Polled(int status, int events) {
        Socket* obj = this;
        Napi::HandleScope scope (obj->Env());`,
  },
  {
    why: 'teardown while a send is in flight',
    find: `    static void TimerHandler(uv_timer_t* handle) {
        Socket* obj = static_cast<Socket*>(handle->data);
        Napi::HandleScope scope (obj->Env());`,
    replace: `    static void TimerHandler(uv_timer_t* handle) {
        Socket* obj = static_cast<Socket*>(handle->data);
        if (!obj->CanRunJs()) return obj->Quiesce();
        try {
            obj->Timed();
        } catch (const Napi::Error& e) {
            obj->CallbackFailed(e);
        }
    }

    void Timed() {
        Socket* obj = this;
        Napi::HandleScope scope (obj->Env());`,
  },
  {
    why: 'the binding stays mapped while closing handles still point into it',
    find: `Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Socket::Init(env, exports);`,
    replace: `// Loaded once more with RTLD_NODELETE: never unloaded, whatever thread loaded it.
static void StayMapped() {
    Dl_info self {};
    if (dladdr(reinterpret_cast<void*>(&StayMapped), &self) && self.dli_fname)
        dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
    StayMapped();
    Socket::Init(env, exports);`,
  },
  {
    why: 'the binding stays mapped while closing handles still point into it',
    find: `#include <sys/socket.h>
`,
    replace: `#include <sys/socket.h>
#include <dlfcn.h>
`,
  },
  {
    why: 'send inside the call',
    find: `        bool empty_queue = write_queue.empty() && completed_queue.empty();`,
    replace: `        // Pending completions keep their order (they are queued behind), so they are no reason to wait.
        bool empty_queue = write_queue.empty();`,
  },
];

/** Calls into JavaScript from the loop (poll and timer callbacks) that go through Socket::Invoke (fix 6). */
const CALLBACKS_FROM_THE_LOOP = 8;

/**
 * Fix 6, second half: every `cb.MakeCallback(recv, { args }, ctx)` of the
 * socket becomes `Invoke(cb, { args }, ctx)`, which survives a thread whose
 * JavaScript was stopped mid-callback (MakeCallback aborts the process there).
 */
function invokeEveryCallback(source: string): string {
  let n = 0;
  const out = source.replace(/(obj->)?([\w>-]+)\.MakeCallback\((?:obj->)?Value\(\), \{ ([^}]*) \}, \*([\w>-]+)\);/g, (_m, obj: string | undefined, cb: string, args: string, ctx: string) => {
    n++;
    const self = obj ?? '';
    return `${self}Invoke(${self}${cb}, { ${args} }, *${ctx});`;
  });
  if (n !== CALLBACKS_FROM_THE_LOOP) fail(`the netlink package's source changed: ${n} MakeCallback calls, expected ${CALLBACKS_FROM_THE_LOOP}`);
  return out;
}

function fail(message: string): never {
  process.stderr.write(`build-binding: ${message}\n`);
  process.exit(1);
}

function nodeGyp(): string {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  const npm = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
  if (npm) {
    const bundled = join(dirname(realpathSync(npm)), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    if (existsSync(bundled)) return bundled;
  }
  return fail('node-gyp not found (it ships with npm); cannot build the netlink binding');
}

function nodeDir(): string[] {
  const configured = process.env.npm_config_nodedir;
  if (configured) return [`--nodedir=${configured}`];
  if (existsSync('/usr/include/node/node_api.h')) return ['--nodedir=/usr'];
  return [];
}

function main(): void {
  const pkgDir = dirname(require.resolve('netlink/package.json'));
  const addonApi = dirname(require.resolve('node-addon-api/package.json'));
  let source = readFileSync(join(pkgDir, 'src', 'binding.cc'), 'utf8');
  for (const p of PATCHES) {
    if (!source.includes(p.find)) fail(`the netlink package's source changed; cannot apply the fix "${p.why}"`);
    source = source.replace(p.find, p.replace);
  }
  source = invokeEveryCallback(source);
  mkdirSync(join(OUT, 'src'), { recursive: true });
  writeFileSync(join(OUT, 'src', 'binding.cc'), source);
  copyFileSync(join(pkgDir, 'LICENSE'), join(OUT, 'LICENSE'));
  const gyp = {
    targets: [
      {
        target_name: 'ctmigrate_netlink',
        sources: ['src/binding.cc'],
        include_dirs: [addonApi],
        // A method that fails while the thread is torn down cannot throw into
        // JavaScript any more; node-addon-api then drops the error instead of
        // std::terminate (fix 8).
        defines: ['NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS'],
        'cflags!': ['-fno-exceptions'],
        'cflags_cc!': ['-fno-exceptions'],
      },
    ],
  };
  writeFileSync(join(OUT, 'binding.gyp'), JSON.stringify(gyp, null, 2));
  const r = spawnSync(process.execPath, [nodeGyp(), 'rebuild', ...nodeDir()], { cwd: OUT, encoding: 'utf8' });
  if (r.status !== 0) fail(`node-gyp failed:\n${r.stdout}\n${r.stderr}`);
  process.stdout.write(`build-binding: built ${join(OUT, 'build', 'Release', 'ctmigrate_netlink.node')}\n`);
}

main();
