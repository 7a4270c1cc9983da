import Foundation
import LibPQ
#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL cluster for tests: `initdb` into a temporary
/// directory, listening only on a Unix socket there. When the tests run as
/// root it runs as the `postgres` user (PostgreSQL refuses root). A watchdog
/// stops it when the test process goes away, however that happens.
public final class PostgresCluster: @unchecked Sendable {
    public let directory: String
    public let port: Int
    private let runAsPostgres: Bool
    private let binDir: String
    private var counter = 0
    private let lock = NSLock()

    /// One cluster shared by every test in the process; each test makes its own database.
    public static let shared: PostgresCluster = {
        do { return try PostgresCluster() } catch { fatalError("cannot start a test PostgreSQL cluster: \(error)") }
    }()

    public init() throws {
        binDir = try Self.findBinDir()
        runAsPostgres = geteuid() == 0
        directory = try makeTemporaryDirectory("pgcluster")
        port = freePort()
        if runAsPostgres {
            _ = try Self.run("/bin/chown", ["-R", "postgres:postgres", directory])
        }
        chmod(directory, 0o755)
        let initdb = try runAsOwner(binDir + "/initdb", ["-D", directory + "/data", "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        guard initdb.status == 0 else { throw TestFailure("initdb failed: \(initdb.output)") }
        try start()
        // Stop the server when this process exits, even if it crashes.
        let watchdog = """
        while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done
        \(runAsPostgres ? "runuser -u postgres -- " : "")\(binDir)/pg_ctl -D \(directory)/data -m immediate stop >/dev/null 2>&1
        rm -rf \(directory)
        """
        // Wait for the launching shell: killing it early (ChildProcess's deinit) could stop the watchdog being born.
        try ChildProcess("/bin/sh", arguments: ["-c", "setsid sh -c '\(watchdog)' >/dev/null 2>&1 &"], stdout: .null).waitForExit()
    }

    private static func findBinDir() throws -> String {
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted()
        if let v = versions.last, FileManager.default.isExecutableFile(atPath: "\(base)/\(v)/bin/initdb") { return "\(base)/\(v)/bin" }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/pg_ctl") {
            return String(dir)
        }
        throw TestFailure("PostgreSQL server binaries not found: apt-get install postgresql")
    }

    @discardableResult
    static func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let run = try runTool(path, arguments)
        return (run.status, run.all)
    }

    private func runAsOwner(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        if runAsPostgres { return try Self.run("/usr/sbin/runuser", ["-u", "postgres", "--", path] + arguments) }
        return try Self.run(path, arguments)
    }

    /// Starts the server and waits until it accepts connections. `fsync=off`
    /// keeps tests fast and is safe here: a crash of the server process (not
    /// of the machine) loses nothing the OS was given; commits stay synchronous
    /// so an "immediate" stop loses no committed transaction.
    public func start() throws {
        let options = "-p \(port) -k \(directory) -c listen_addresses='' -c fsync=off -c full_page_writes=off -c max_connections=100"
        let result = try runAsOwner(binDir + "/pg_ctl", ["-D", directory + "/data", "-l", directory + "/server.log", "-o", options, "-w", "-t", "60", "start"])
        guard result.status == 0 else {
            let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
            throw TestFailure("pg_ctl start failed: \(result.output) \(log)")
        }
    }

    /// Stops the server (`fast` closes connections; `immediate` is a crash).
    public func stop(mode: String = "fast") throws {
        let result = try runAsOwner(binDir + "/pg_ctl", ["-D", directory + "/data", "-m", mode, "-w", "stop"])
        guard result.status == 0 else { throw TestFailure("pg_ctl stop failed: \(result.output)") }
    }

    public func conninfo(database: String) -> String {
        "host=\(directory) port=\(port) user=postgres dbname=\(database)"
    }

    /// A new, empty database with `changeset.sql` applied (unless told not to).
    public func makeDatabase(applyChangeset: Bool = true) throws -> String {
        lock.lock()
        counter += 1
        let name = "t\(getpid())_\(counter)"
        lock.unlock()
        let admin = try PGConnection(conninfo: conninfo(database: "postgres"))
        try admin.execute("CREATE DATABASE \(name)")
        admin.close()
        if applyChangeset {
            let db = try PGConnection(conninfo: conninfo(database: name))
            try db.executeScript(try String(contentsOfFile: packageRoot() + "/changeset.sql", encoding: .utf8))
        }
        return name
    }
}

/// The repository root (where Package.swift is), found from this source file.
public func packageRoot(file: String = #filePath) -> String {
    var url = URL(fileURLWithPath: file)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    return FileManager.default.currentDirectoryPath
}
