import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Throwaway nats-server processes with JetStream for tests: one node, or
/// a cluster of several on loopback, each with its own store in a temporary
/// directory. Nodes can be killed (SIGKILL) and started again with their
/// data. A watchdog kills them when the test process goes away, however
/// that happens.
public final class NATSCluster: @unchecked Sendable {
    public struct Node {
        public let name: String
        public let clientPort: Int
        public let clusterPort: Int
        public let monitorPort: Int
        public var url: String { "nats://127.0.0.1:\(clientPort)" }
    }

    public let directory: String
    public let nodes: [Node]
    private var processes: [ChildProcess?]
    private let lock = NSLock()

    /// Every node's client URL, comma-separated (what `NATS_URL` takes).
    public var urls: String { nodes.map(\.url).joined(separator: ",") }

    public init(nodes count: Int = 1) throws {
        guard let server = Self.serverPath() else { throw TestFailure("nats-server not found: apt-get install nats-server") }
        directory = try makeTemporaryDirectory("nats")
        var ports = Set<Int>()
        func port() -> Int {
            while true {
                let candidate = freePort()
                if ports.insert(candidate).inserted { return candidate }
            }
        }
        nodes = (1...count).map { Node(name: "n\($0)", clientPort: port(), clusterPort: port(), monitorPort: port()) }
        processes = Array(repeating: nil, count: count)
        for node in nodes {
            let routes = nodes.filter { $0.name != node.name }.map { "nats-route://127.0.0.1:\($0.clusterPort)" }
            let cluster = count > 1 ? """
                cluster {
                  name: meetperry-test
                  listen: 127.0.0.1:\(node.clusterPort)
                  routes: [\(routes.joined(separator: ", "))]
                }
                """ : ""
            let config = """
                server_name: \(node.name)
                listen: 127.0.0.1:\(node.clientPort)
                http: 127.0.0.1:\(node.monitorPort)
                jetstream {
                  store_dir: "\(directory)/\(node.name)"
                  max_memory_store: 64MB
                  max_file_store: 2GB
                }
                \(cluster)
                """
            try config.write(toFile: "\(directory)/\(node.name).conf", atomically: false, encoding: .utf8)
        }
        _ = server
        // Kill the servers when this process exits, even if it crashes.
        let watchdog = """
        while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done
        pkill -9 -f '\(directory)/' >/dev/null 2>&1
        rm -rf \(directory)
        """
        try ChildProcess("/bin/sh", arguments: ["-c", "setsid sh -c \"\(watchdog)\" >/dev/null 2>&1 &"], stdout: .null).waitForExit()
        for index in nodes.indices { try start(index, wait: false) }
        for index in nodes.indices { try waitUntilReady(index) }
    }

    deinit {
        for index in nodes.indices { kill(index) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    public static func serverPath() -> String? {
        for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return nil
    }

    /// Starts node `index` (again, with its data) and, unless told not to, waits until it serves JetStream.
    public func start(_ index: Int, wait: Bool = true) throws {
        let node = nodes[index]
        let process = try ChildProcess(Self.serverPath()!, arguments: ["-c", "\(directory)/\(node.name).conf"],
                                       stdout: .null, stderr: .file("\(directory)/\(node.name).log"))
        lock.lock()
        processes[index] = process
        lock.unlock()
        if wait { try waitUntilReady(index) }
    }

    /// SIGKILL: the node dies mid-write, as in a power cut of its host.
    public func kill(_ index: Int) {
        lock.lock()
        let process = processes[index]
        processes[index] = nil
        lock.unlock()
        guard let process else { return }
        process.signal(SIGKILL)
        _ = try? process.waitForExit(timeout: 30)
    }

    public func isRunning(_ index: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return processes[index]?.isRunning == true
    }

    /// Waits until the node answers its health check with JetStream ready
    /// (in a cluster: connected to a JetStream meta leader).
    public func waitUntilReady(_ index: Int, timeout: Double = 60) throws {
        let node = nodes[index]
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let answer = try? HTTPConnection(port: node.monitorPort, timeoutSeconds: 2).request("GET", "/healthz", headers: [:]),
               answer.status == 200 {
                return
            }
            guard isRunning(index) else { throw TestFailure("nats-server \(node.name) exited: \(log(index))") }
            usleep(100_000)
        }
        throw TestFailure("nats-server \(node.name) not ready within \(timeout) s: \(log(index))")
    }

    /// The node's log so far.
    public func log(_ index: Int) -> String {
        (try? String(contentsOfFile: "\(directory)/\(nodes[index].name).log", encoding: .utf8)) ?? ""
    }

    /// The index of the node named `name` (as a stream's leader is reported).
    public func index(named name: String) -> Int? {
        nodes.firstIndex { $0.name == name }
    }
}
