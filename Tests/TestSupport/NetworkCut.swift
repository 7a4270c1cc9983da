import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Cuts one nats-server off from the rest of its cluster on loopback, the
/// way a network partition would: every packet of its cluster routes is
/// dropped, in both directions, while clients still reach it. The node runs
/// with a group of its own (`isolatedGroup`); connections it opens are
/// marked when they start (`CONNMARK` in mangle `OUTPUT`, matched by
/// owner), and while cut, packets of marked connections to or from the
/// other nodes' cluster ports, and packets to or from its own cluster port,
/// are dropped. Rules live in chains of their own, named after this test
/// process, removed by `tearDown` (and by a watchdog when the process dies).
public final class NetworkCut: @unchecked Sendable {
    /// The group the cuttable node runs with (nogroup).
    static let isolatedGroup = 65534
    let chain: String
    let mark = "0x4d50"
    let others: [Int]
    let own: Int
    private var applied = false

    init(group: Int, others: [Int], own: Int) throws {
        chain = "MPCUT\(getpid())"
        self.others = others
        self.own = own
        try Self.iptables(["-t", "mangle", "-N", chain])
        try Self.iptables(["-t", "mangle", "-A", chain, "-m", "owner", "--gid-owner", "\(group)", "-m", "conntrack", "--ctstate", "NEW",
                           "-j", "CONNMARK", "--set-mark", mark])
        try Self.iptables(["-t", "mangle", "-I", "OUTPUT", "-j", chain])
        try Self.iptables(["-N", chain])
        try Self.iptables(["-I", "OUTPUT", "-j", chain])
        let cleanup = "iptables -D OUTPUT -j \(chain); iptables -F \(chain); iptables -X \(chain); "
            + "iptables -t mangle -D OUTPUT -j \(chain); iptables -t mangle -F \(chain); iptables -t mangle -X \(chain)"
        let watchdog = "while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; \(cleanup)"
        try ChildProcess("/bin/sh", arguments: ["-c", "setsid sh -c '\(watchdog)' >/dev/null 2>&1 &"], stdout: .null).waitForExit()
    }

    func apply() throws {
        guard !applied else { return }
        let ports = others.map(String.init).joined(separator: ",")
        try Self.iptables(["-A", chain, "-p", "tcp", "-m", "connmark", "--mark", mark, "-m", "multiport", "--dports", ports, "-j", "DROP"])
        try Self.iptables(["-A", chain, "-p", "tcp", "-m", "connmark", "--mark", mark, "-m", "multiport", "--sports", ports, "-j", "DROP"])
        try Self.iptables(["-A", chain, "-p", "tcp", "--dport", "\(own)", "-j", "DROP"])
        try Self.iptables(["-A", chain, "-p", "tcp", "--sport", "\(own)", "-j", "DROP"])
        applied = true
    }

    func remove() throws {
        try Self.iptables(["-F", chain])
        applied = false
    }

    func tearDown() {
        for arguments in [["-D", "OUTPUT", "-j", chain], ["-F", chain], ["-X", chain],
                          ["-t", "mangle", "-D", "OUTPUT", "-j", chain], ["-t", "mangle", "-F", chain], ["-t", "mangle", "-X", chain]] {
            _ = try? Self.iptables(arguments)
        }
    }

    /// Whether this machine lets a test filter loopback packets (root, iptables with owner and connmark matches).
    public static var isAvailable: Bool {
        guard getuid() == 0, let path = try? systemTool("iptables", package: "iptables"),
              let run = try? runTool(path, ["-t", "mangle", "-L", "OUTPUT", "-n"], timeout: 20) else { return false }
        return run.status == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
    }

    @discardableResult
    static func iptables(_ arguments: [String]) throws -> ToolRun {
        let path = (try? systemTool("iptables", package: "iptables")) ?? "/usr/sbin/iptables"
        let run = try runTool(path, ["-w"] + arguments, timeout: 30)
        guard run.status == 0 else { throw TestFailure("iptables \(arguments.joined(separator: " ")): \(run.all)") }
        return run
    }
}
