import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An HTTP response as the test saw it on the wire.
public struct HTTPResult: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: [UInt8]
    public var text: String { String(decoding: body, as: UTF8.self) }
    public func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// A deliberately plain blocking HTTP/1.1 client over one TCP connection, so
/// tests control exactly what is sent (keep-alive, partial bodies, odd bytes).
public final class HTTPConnection {
    public let fd: Int32
    private var buffer: [UInt8] = []

    public init(port: Int, host: String = "127.0.0.1", timeoutSeconds: Int = 30) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            if e == ECONNREFUSED { throw ConnectionRefused(address: "\(host):\(port)") }
            throw TestFailure("connect to \(host):\(port): errno \(e)")
        }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        self.fd = fd
    }

    deinit { close(fd) }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 { if errno == EINTR { continue }; throw TestFailure("send: errno \(errno)") }
            offset += n
        }
    }

    public func request(
        _ method: String = "POST",
        _ path: String = "/webhook",
        headers: [String: String] = ["Content-Type": "application/json"],
        body: [UInt8] = []
    ) throws -> HTTPResult {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if !body.isEmpty || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        try send(Array(head.utf8) + body)
        return try readResponse()
    }

    /// Reads (and drops) whatever comes until the server closes the
    /// connection; true if it did within `timeout` seconds.
    public func waitForClose(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 100)
            if ready <= 0 { continue }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN) { return true }
        }
        return false
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 && errno == EINTR { return }
        guard n > 0 else { throw TestFailure(n == 0 ? "connection closed by server" : "recv: errno \(errno)") }
        buffer.append(contentsOf: chunk[0..<n])
    }

    /// Tells the server nothing more will be sent (a half-close).
    public func shutdownWrite() {
        shutdown(fd, Int32(SHUT_WR))
    }

    /// The next response; `bodyless` for the answer to a HEAD request
    /// (headers that describe a body that is not sent).
    public func readResponse(bodyless: Bool = false) throws -> HTTPResult {
        var headerEnd: Int?
        while headerEnd == nil {
            if buffer.count >= 4 {
                for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
                    headerEnd = i
                    break
                }
            }
            if headerEnd == nil { try fill() }
        }
        let headText = String(decoding: buffer[0..<headerEnd!], as: UTF8.self)
        buffer.removeFirst(headerEnd! + 4)
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw TestFailure("bad status line: \(headText)") }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body: [UInt8] = []
        if bodyless || status == 100 {
            // No body follows.
        } else if let length = headers["content-length"].flatMap({ Int($0) }) {
            while buffer.count < length { try fill() }
            body = Array(buffer[0..<length])
            buffer.removeFirst(length)
        } else if headers["transfer-encoding"]?.lowercased() == "chunked" {
            while true {
                var lineEnd: Int?
                while lineEnd == nil {
                    if buffer.count >= 2 {
                        for i in 0...(buffer.count - 2) where buffer[i] == 13 && buffer[i + 1] == 10 { lineEnd = i; break }
                    }
                    if lineEnd == nil { try fill() }
                }
                let size = Int(String(decoding: buffer[0..<lineEnd!], as: UTF8.self).split(separator: ";")[0], radix: 16) ?? 0
                buffer.removeFirst(lineEnd! + 2)
                while buffer.count < size + 2 { try fill() }
                body.append(contentsOf: buffer[0..<size])
                buffer.removeFirst(size + 2)
                if size == 0 { break }
            }
        }
        return HTTPResult(status: status, headers: headers, body: body)
    }
}

/// Nothing listened where the test connected (ECONNREFUSED).
public struct ConnectionRefused: Error, CustomStringConvertible {
    public var address: String
    public var description: String { "connect to \(address): connection refused" }
}

/// A listening TCP socket on a free loopback port, held the way systemd holds
/// a `.socket` unit's: the test passes it to the programs it starts (fd 3)
/// and keeps it open while they come and go.
public final class HeldListeningSocket: @unchecked Sendable {
    public let fd: Int32
    public let port: Int

    public init(backlog: Int32 = 4096) throws {
        let raw = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw TestFailure("socket: errno \(errno)") }
        // Above 3, so handing it to a child as fd 3 is a real dup2 (which clears close-on-exec there).
        let fd = fcntl(raw, F_DUPFD_CLOEXEC, 10)
        close(raw)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, backlog) == 0 else { throw TestFailure("bind/listen: errno \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    deinit { close(fd) }

    /// Starts `program` with this socket as its fd 3 and `LISTEN_FDS=1`, and
    /// `LISTEN_PID` set to the program's own pid (by a shell that then execs it), as systemd does.
    public func activate(_ program: String, arguments: [String] = [], environment: [String: String] = [:],
                         stdout: ChildProcess.Stream = .pipe, stderr: ChildProcess.Stream = .null) throws -> ChildProcess {
        var env = environment
        env["LISTEN_FDS"] = "1"
        return try ChildProcess("/bin/sh", arguments: ["-c", #"LISTEN_PID=$$ exec "$0" "$@""#, program] + arguments,
                                environment: env, stdout: stdout, stderr: stderr, inheriting: [fd])
    }
}

/// One request on a fresh connection.
public func httpRequest(
    port: Int, _ method: String = "POST", _ path: String = "/webhook",
    headers: [String: String] = ["Content-Type": "application/json"], body: [UInt8] = []
) throws -> HTTPResult {
    try HTTPConnection(port: port).request(method, path, headers: headers, body: body)
}

/// A TCP port that was free a moment ago.
public func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Where the package's executables were built: next to the test bundle,
/// unless MEETPERRY_BIN_DIR says otherwise.
public func executable(_ name: String) -> String {
    if let dir = ProcessInfo.processInfo.environment["MEETPERRY_BIN_DIR"] { return dir + "/" + name }
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var dir = exe.deletingLastPathComponent()
    // The XCTest bundle may sit one level deeper than the executables.
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return exe.deletingLastPathComponent().appendingPathComponent(name).path
}

/// A fresh temporary directory.
/// Inside one directory for the whole test process, which a watchdog
/// removes when the process ends, however it ends: a test run leaves
/// nothing in /tmp (clusters, archives, stores included).
public func makeTemporaryDirectory(_ prefix: String = "meetperry") throws -> String {
    var template = Array((try testRunDirectory.get() + "/\(prefix).XXXXXX").utf8CString)
    guard let path = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw TestFailure("mkdtemp failed: errno \(errno)")
    }
    return String(cString: path)
}

/// `$TMPDIR/meetperry-tests.<pid>`, made once, traversable by the `postgres`
/// user (the throwaway clusters live inside), removed after the process.
private let testRunDirectory: Result<String, TestFailure> = {
    let base = NSTemporaryDirectory().hasSuffix("/") ? String(NSTemporaryDirectory().dropLast()) : NSTemporaryDirectory()
    let root = "\(base)/meetperry-tests.\(getpid())"
    guard mkdir(root, 0o755) == 0 || errno == EEXIST else { return .failure(TestFailure("mkdir \(root): errno \(errno)")) }
    chmod(root, 0o755)
    let watchdog = "while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; sleep 10; rm -rf '\(root)'"
    do {
        try ChildProcess("/bin/sh", arguments: ["-c", "setsid sh -c \"\(watchdog)\" >/dev/null 2>&1 &"], stdout: .null).waitForExit()
    } catch {
        return .failure(TestFailure("cannot start the clean-up watchdog: \(error)"))
    }
    return .success(root)
}()
