#if canImport(Glibc)
import Glibc
#endif

/// The listening socket a supervisor hands over, as `sd_listen_fds(3)`
/// defines it: `LISTEN_PID` names the process meant, `LISTEN_FDS` how many
/// descriptors it got, from fd 3 on (`LISTEN_FDNAMES` optionally names them).
///
/// It exists so that a restart refuses no sender: systemd (`meetperry.socket`)
/// keeps the socket open while one receiver drains and the next starts, and
/// connections made in between wait in its backlog instead of being refused.
public struct SocketActivation: Equatable, Sendable {
    /// `SD_LISTEN_FDS_START`.
    public static let firstDescriptor: Int32 = 3
    /// The variables that hand it over; unset once taken, so no child inherits them.
    public static let variables = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]

    /// The descriptor the receiver serves webhooks on.
    public var descriptor: Int32
    /// Its name in `LISTEN_FDNAMES` (`FileDescriptorName=`), when given.
    public var name: String?

    /// What the environment hands to the process `pid`: nil when it hands
    /// nothing (no `LISTEN_PID`, or one naming another process, which is how
    /// `sd_listen_fds` tells inherited variables from those meant for it).
    public static func parse(environment: [String: String], pid: Int32) throws(Invalid) -> SocketActivation? {
        guard let pidText = environment["LISTEN_PID"] else { return nil }
        guard let listenPID = Int32(pidText), listenPID > 0 else { throw .malformed(variable: "LISTEN_PID", value: pidText) }
        guard listenPID == pid else { return nil }
        let countText = environment["LISTEN_FDS"] ?? ""
        guard let count = Int(countText), count >= 0 else { throw .malformed(variable: "LISTEN_FDS", value: countText) }
        switch count {
        case 0: return nil
        case 1: break
        default: throw .tooMany(count)
        }
        let name = environment["LISTEN_FDNAMES"].flatMap { $0.split(separator: ":", omittingEmptySubsequences: false).first.map(String.init) }
        return SocketActivation(descriptor: firstDescriptor, name: name)
    }

    /// Checks that the descriptor is a listening TCP socket, marks it
    /// close-on-exec and returns the address it listens on (`127.0.0.1:8000`,
    /// `[::]:8000`).
    public func adopt() throws(Invalid) -> String {
        var type: Int32 = 0
        var accepting: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_TYPE, &type, &length) == 0 else {
            throw .notListening(descriptor: descriptor, reason: errno == ENOTSOCK ? "it is not a socket" : "it is not open")
        }
        length = socklen_t(MemoryLayout<Int32>.size)
        guard type == Int32(SOCK_STREAM.rawValue), getsockopt(descriptor, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0, accepting == 1 else {
            throw .notListening(descriptor: descriptor, reason: "it is not a listening stream socket (ListenStream=)")
        }
        guard let address = Self.localAddress(descriptor) else {
            throw .notListening(descriptor: descriptor, reason: "it is not a TCP socket (IPv4 or IPv6)")
        }
        _ = fcntl(descriptor, F_SETFD, fcntl(descriptor, F_GETFD) | FD_CLOEXEC)
        return address
    }

    /// Takes the variables out of this process's environment.
    public static func unsetVariables() {
        for variable in variables { unsetenv(variable) }
    }

    private static func localAddress(_ fd: Int32) -> String? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return nil }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                    var ip = address.pointee.sin_addr
                    inet_ntop(AF_INET, &ip, &text, socklen_t(text.count))
                    return "\(String(cString: text)):\(UInt16(bigEndian: address.pointee.sin_port))"
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address in
                    var ip = address.pointee.sin6_addr
                    inet_ntop(AF_INET6, &ip, &text, socklen_t(text.count))
                    return "[\(String(cString: text))]:\(UInt16(bigEndian: address.pointee.sin6_port))"
                }
            }
        default:
            return nil
        }
    }

    /// What was handed over cannot be used; the message says what to change.
    public enum Invalid: Error, Equatable, CustomStringConvertible {
        case malformed(variable: String, value: String)
        case tooMany(Int)
        case notListening(descriptor: Int32, reason: String)

        public var description: String {
            switch self {
            case .malformed(let variable, let value):
                return "socket activation: \(variable)=\(value.debugDescription) is not a number (see sd_listen_fds(3))"
            case .tooMany(let count):
                return "socket activation: LISTEN_FDS=\(count), but the receiver takes one listening socket (the webhook port): give its .socket unit one ListenStream= (metrics have RECEIVER_METRICS_PORT)"
            case .notListening(let descriptor, let reason):
                return "socket activation: fd \(descriptor) (LISTEN_FDS) cannot be served: \(reason)"
            }
        }
    }
}
