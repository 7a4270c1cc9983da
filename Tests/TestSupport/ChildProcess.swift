import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A program of ours started the way an operator starts it: real file
/// descriptors, real pipes, real signals. posix_spawn is used directly so the
/// test decides exactly which pipe ends stay open where.
public final class ChildProcess: @unchecked Sendable {
    public enum Stream {
        /// A new pipe; the test holds the other end.
        case pipe
        /// Inherit nothing: /dev/null.
        case null
        /// An existing descriptor of the test process.
        case fd(Int32)
        /// A file (created/truncated).
        case file(String)
        /// A file, created or appended to (a log kept across restarts).
        case appending(String)
    }

    public let pid: pid_t
    /// The test's end of the child's stdin pipe, when `.pipe`.
    public private(set) var stdinFD: Int32?
    /// The test's end of the child's stdout pipe, when `.pipe`.
    public private(set) var stdoutFD: Int32?
    private var exitStatus: Int32?

    public init(
        _ path: String,
        arguments: [String] = [],
        environment: [String: String] = [:],
        stdin: Stream = .null,
        stdout: Stream = .pipe,
        stderr: Stream = .null,
        inheriting: [Int32] = []
    ) throws {
        // Pipes are made and handed over under one lock, so a child started
        // by another test thread never inherits this child's pipe ends.
        spawnLock.lock()
        defer { spawnLock.unlock() }
        // (Every descriptor this test process opens is close-on-exec: a child
        // must not inherit another test's sockets or pipes.)
        // A child that exits while the test still writes to it must be an
        // assertion failure, not SIGPIPE killing the whole test process.
        _ = Glibc.signal(SIGPIPE, SIG_IGN)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var closeInParent: [Int32] = []
        var parentStdin: Int32?
        var parentStdout: Int32?

        func setup(_ stream: Stream, target: Int32, childReads: Bool) throws {
            switch stream {
            case .pipe:
                var fds: [Int32] = [0, 0]
                guard pipe(&fds) == 0 else { throw POSIXError(.init(rawValue: errno)!) }
                _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
                _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
                let (childEnd, parentEnd) = childReads ? (fds[0], fds[1]) : (fds[1], fds[0])
                posix_spawn_file_actions_adddup2(&actions, childEnd, target)
                closeInParent.append(childEnd)
                if childReads { parentStdin = parentEnd } else { parentStdout = parentEnd }
            case .null:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", childReads ? O_RDONLY : O_WRONLY, 0)
            case .fd(let fd):
                posix_spawn_file_actions_adddup2(&actions, fd, target)
            case .file(let path):
                posix_spawn_file_actions_addopen(&actions, target, path, childReads ? O_RDONLY : (O_WRONLY | O_CREAT | O_TRUNC), 0o644)
            case .appending(let path):
                posix_spawn_file_actions_addopen(&actions, target, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            }
        }
        try setup(stdin, target: 0, childReads: true)
        try setup(stdout, target: 1, childReads: false)
        try setup(stderr, target: 2, childReads: false)
        // `inheriting`: the child's fd 3, 4, … (as systemd passes listening sockets).
        for (index, fd) in inheriting.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, fd, 3 + Int32(index))
        }

        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        // The child starts as from a shell: no blocked signals (test threads
        // may block some), and default dispositions (this process ignores SIGPIPE).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        closeInParent.forEach { close($0) }
        guard rc == 0 else { throw POSIXError(.init(rawValue: rc)!) }
        self.pid = pid
        self.stdinFD = parentStdin
        self.stdoutFD = parentStdout
    }

    deinit {
        if exitStatus == nil { kill(pid, SIGKILL); _ = try? waitForExit() }
        if let stdinFD { close(stdinFD) }
        if let stdoutFD { close(stdoutFD) }
    }

    public func signal(_ signal: Int32) { kill(pid, signal) }

    public func closeStdin() {
        if let fd = stdinFD { close(fd); stdinFD = nil }
    }

    public func closeStdout() {
        if let fd = stdoutFD { close(fd); stdoutFD = nil }
    }

    public func writeStdin(_ bytes: [UInt8]) {
        guard let fd = stdinFD else { return }
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { if errno == EINTR { continue }; return }
                offset += n
            }
        }
    }

    /// Blocks until the child exits; returns its exit code, or 128+signal.
    @discardableResult
    public func waitForExit(timeout: Double = 120) throws -> Int32 {
        if let exitStatus { return exitStatus }
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { throw POSIXError(.init(rawValue: errno)!) }
            if Date() > deadline {
                kill(pid, SIGKILL)
                throw TestFailure("process \(pid) did not exit within \(timeout)s")
            }
            usleep(10_000)
        }
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        exitStatus = code
        return code
    }

    /// Whether the child is still running.
    public var isRunning: Bool {
        if exitStatus != nil { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid {
            exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            return false
        }
        return true
    }

    /// Resident memory of the child in bytes (VmRSS), or nil once it has gone.
    public var residentBytes: Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let digits = line.split(separator: " ").compactMap { Int($0) }
            return digits.first.map { $0 * 1024 }
        }
        return nil
    }
}

private let spawnLock = NSLock()

/// A failure inside test support code, with a message saying what went wrong.
public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
