import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a NATS server says of itself the moment a client connects: the
/// `INFO {...}` line it sends before anything else (its version, its name,
/// whether JetStream is on, and the client URLs of the cluster's other
/// servers). libnats reads it too but does not hand it out, so this opens
/// a plain TCP connection of its own, reads that one line and closes; the
/// line comes in the clear even on a TLS port (TLS starts after it).
public struct ServerAnnouncement: Sendable, Equatable {
    public var url: String
    public var serverName: String
    public var version: ServerVersion
    public var jetStream: Bool
    /// `host:port` of the other servers the cluster advertises to clients.
    public var connectURLs: [String]

    public init(url: String, serverName: String, version: ServerVersion, jetStream: Bool, connectURLs: [String]) {
        self.url = url
        self.serverName = serverName
        self.version = version
        self.jetStream = jetStream
        self.connectURLs = connectURLs
    }

    /// Connects to `url` (`nats://host:port`, `tls://host:port` or
    /// `host:port`) and reads its `INFO` line, within `timeoutMilliseconds`.
    public static func read(from url: String, timeoutMilliseconds: Int = 2000) throws(NATSError) -> ServerAnnouncement {
        guard let (host, port) = hostAndPort(url) else {
            throw NATSError(status: 0, message: "\(url) is not host:port")
        }
        let line = try firstLine(host: host, port: port, timeoutMilliseconds: timeoutMilliseconds, url: url)
        return try parse(line, url: url)
    }

    /// The announcement in one `INFO {...}` line.
    public static func parse(_ line: String, url: String) throws(NATSError) -> ServerAnnouncement {
        guard line.hasPrefix("INFO "),
              let object = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(5).utf8)) as? [String: Any]
        else { throw NATSError(status: 0, message: "\(url) did not announce itself as a NATS server (got \(line.prefix(80).debugDescription))") }
        guard let text = object["version"] as? String, let version = ServerVersion(text) else {
            throw NATSError(status: 0, message: "\(url) announced no version we can read")
        }
        return ServerAnnouncement(url: url, serverName: object["server_name"] as? String ?? "", version: version,
                                  jetStream: object["jetstream"] as? Bool ?? false,
                                  connectURLs: object["connect_urls"] as? [String] ?? [])
    }

    /// `host:port` of a server URL, to tell two spellings of one server apart.
    public static func address(_ url: String) -> String? {
        hostAndPort(url).map { "\($0.0):\($0.1)" }
    }

    static func hostAndPort(_ url: String) -> (String, UInt16)? {
        var rest = Substring(url)
        if let scheme = rest.range(of: "://") { rest = rest[scheme.upperBound...] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else { return nil }
        var host = rest[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return host.isEmpty ? nil : (String(host), port)
    }

    private static func firstLine(host: String, port: UInt16, timeoutMilliseconds: Int, url: String) throws(NATSError) -> String {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &found) == 0, let first = found else {
            throw NATSError(status: 0, message: "\(url): cannot resolve \(host)")
        }
        defer { freeaddrinfo(found) }
        var failure = "no address"
        var address: UnsafeMutablePointer<addrinfo>? = first
        while let candidate = address {
            address = candidate.pointee.ai_next
            let fd = socket(candidate.pointee.ai_family, candidate.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), candidate.pointee.ai_protocol)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var timeout = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: (timeoutMilliseconds % 1000) * 1000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            guard connect(fd, candidate.pointee.ai_addr, candidate.pointee.ai_addrlen) == 0 else {
                failure = String(cString: strerror(errno))
                continue
            }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while !bytes.contains(UInt8(ascii: "\n")) && bytes.count < 1 << 20 {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { break }
                bytes += chunk[..<n]
            }
            guard let end = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
                failure = "no INFO line within \(timeoutMilliseconds) ms"
                continue
            }
            var line = bytes[..<end]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            return String(decoding: line, as: UTF8.self)
        }
        throw NATSError(status: 0, message: "\(url): \(failure)")
    }
}

/// A nats-server release number, `major.minor.patch` (a pre-release
/// suffix such as `-beta.1` is kept in `text` and orders before the
/// release, as semantic versioning says).
public struct ServerVersion: Sendable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var patch: Int
    public var preRelease: Bool
    public var text: String

    public init?(_ text: String) {
        let plain = text.hasPrefix("v") ? text.dropFirst() : Substring(text)
        let core = plain.prefix { $0 != "-" && $0 != "+" }
        let parts = core.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.count == 3, let major = parts[0], let minor = parts[1], let patch = parts[2] else { return nil }
        self.major = major
        self.minor = minor
        self.patch = patch
        self.preRelease = plain.dropFirst(core.count).hasPrefix("-")
        self.text = String(plain)
    }

    public var description: String { text }

    public static func < (lhs: ServerVersion, rhs: ServerVersion) -> Bool {
        if (lhs.major, lhs.minor, lhs.patch) != (rhs.major, rhs.minor, rhs.patch) {
            return (lhs.major, lhs.minor, lhs.patch) < (rhs.major, rhs.minor, rhs.patch)
        }
        return lhs.preRelease && !rhs.preRelease
    }

    public static func == (lhs: ServerVersion, rhs: ServerVersion) -> Bool {
        (lhs.major, lhs.minor, lhs.patch, lhs.preRelease) == (rhs.major, rhs.minor, rhs.patch, rhs.preRelease)
    }
}
