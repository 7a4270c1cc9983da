import Foundation
import LibPQ
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// What `scripts/install.sh` puts on a server runs there without the Swift
/// toolchain: the release that `scripts/setup.sh` builds (the Swift runtime
/// linked in) is installed into a temporary `PREFIX`, and run with
/// `/opt/swift` hidden under an empty tmpfs in a mount namespace of its own,
/// as on a server that never had Swift: each program's `--version`, then a
/// real webhook through `receiver | applier` into PostgreSQL.
@Suite(.serialized) struct InstalledTreeTests {
    static let unavailable: String? = {
        guard getuid() == 0 else { return "hiding /opt/swift needs root (a mount namespace)" }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else { return "unshare (util-linux) is missing" }
        return nil
    }()

    @Test(.enabled(if: unavailable == nil, Comment(rawValue: unavailable ?? "")))
    func theInstalledReleaseRunsWithTheSwiftToolchainHidden() throws {
        let root = packageRoot()
        // The release exactly as setup.sh builds it, in a scratch path of its own (swift test holds .build).
        let scratch = root + "/.build-installed"
        let build = try runTool("/bin/bash", [root + "/scripts/setup.sh"], environment: [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "MEETPERRY_SCRATCH_PATH": scratch,
            "HOME": ProcessInfo.processInfo.environment["HOME"] ?? "/root",
        ], timeout: 1800)
        #expect(build.status == 0, "\(build.all.suffix(3000))")
        let prefix = try makeTemporaryDirectory("installed")
        let install = try runTool("/bin/bash", [root + "/scripts/install.sh"], environment: [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
            "PREFIX": prefix, "SYSTEMD_UNIT_DIR": prefix + "/units", "MEETPERRY_BUILD_DIR": scratch + "/release",
            "MEETPERRY_ENV_FILE": prefix + "/meetperry.env", "MEETPERRY_JETSTREAM_ENV_FILE": prefix + "/meetperry-jetstream.env",
        ])
        #expect(install.status == 0 && !install.all.contains("warning"), "\(install.all)")
        let bin = prefix + "/lib/meetperry/bin"

        // Nothing resolves from the toolchain.
        let ldd = try runTool("/usr/bin/ldd", [bin + "/receiver"])
        #expect(!ldd.output.contains("/opt/swift") && !ldd.output.contains("libswiftCore") && !ldd.output.contains("not found"), "\(ldd.output)")

        let postgres = PostgresCluster.shared
        let db = postgres.conninfo(database: try postgres.makeDatabase())
        let port = freePort()
        let body = String(decoding: webhookJSON(id: "from-the-installed-tree"), as: UTF8.self)
        let script = """
            set -u
            mount -t tmpfs -o size=1m tmpfs /opt/swift
            ls -A /opt/swift | grep -q . && { echo "/opt/swift is not hidden"; exit 3; }
            for program in receiver applier reporter; do "\(bin)/$program" --version || exit 4; done
            mkfifo stream
            DATABASE_URL='\(db)' "\(bin)/applier" < stream 2>applier.log & applier=$!
            HTTP_HOST=127.0.0.1 HTTP_PORT=\(port) "\(bin)/receiver" > stream 2>receiver.log & receiver=$!
            for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:\(port)/healthz" && break; sleep 0.1; done
            curl -s -o /dev/null -w 'status %{http_code}\\n' -H 'Content-Type: application/json' --data-binary '\(body)' "http://127.0.0.1:\(port)/webhook"
            kill -TERM "$receiver"; wait "$receiver"; wait "$applier"
            echo "applier: $(tail -n 1 applier.log)"
            """
        let dir = try makeTemporaryDirectory("hidden")
        let run = try runTool("/bin/sh", ["-c", "cd \(dir) && exec /usr/bin/unshare -m --propagation private /bin/sh -c \"$0\"", script], timeout: 120)
        #expect(run.status == 0, "\(run.all)")
        for program in ["receiver", "applier", "reporter"] {
            #expect(run.output.contains("\(program) "), "\(program) --version: \(run.output)")
        }
        #expect(run.output.contains("status 202"), "\(run.all)")
        #expect(run.output.contains("applier finished") && run.output.contains("applied=1"), "\(run.all)")
        let rows = try PGConnection(conninfo: db).execute("SELECT count(*) FROM meetperry.task WHERE external_id = 'from-the-installed-tree'")
        #expect(rows.scalar == "1", "the webhook is in PostgreSQL")
        // The toolchain is still there for everything else.
        #expect(FileManager.default.fileExists(atPath: "/opt/swift/usr/bin/swift"))
    }

    /// The Debian package (`scripts/package.sh`) of that same release: what it
    /// depends on, what it holds, and that it works where it lands. Its tree is
    /// laid over `/usr/lib` in a mount namespace of its own (an overlay, as if
    /// installed), `/opt/swift` hidden: every unit verifies against the files it
    /// names, every program answers `--version`, every maintainer script parses.
    @Test(.enabled(if: unavailable == nil, Comment(rawValue: unavailable ?? "")))
    func theDebianPackageHoldsTheReleaseAndItsUnitsVerifyWhereItLands() throws {
        let root = packageRoot()
        let scratch = root + "/.build-installed"
        let environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                           "HOME": ProcessInfo.processInfo.environment["HOME"] ?? "/root"]
        // A no-op when the test above built it (setup.sh skips a current build).
        let build = try runTool("/bin/bash", [root + "/scripts/setup.sh"], environment: environment.merging(["MEETPERRY_SCRATCH_PATH": scratch]) { $1 },
                                timeout: 1800)
        #expect(build.status == 0, "\(build.all.suffix(3000))")
        let out = try makeTemporaryDirectory("deb")
        let package = try runTool("/bin/bash", [root + "/scripts/package.sh", out], environment: environment.merging(["MEETPERRY_BUILD_DIR": scratch + "/release"]) { $1 },
                                  timeout: 600)
        #expect(package.status == 0, "\(package.all)")
        let deb = package.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(deb.hasSuffix(".deb") && FileManager.default.fileExists(atPath: deb), "\(package.all)")

        let fields = try runTool("/usr/bin/dpkg-deb", ["-f", deb, "Package", "Depends"])
        #expect(fields.output.contains("Package: meetperry") && fields.output.contains("libpq5") && fields.output.contains("libnats3.4"), "\(fields.output)")
        let contents = try runTool("/usr/bin/dpkg-deb", ["-c", deb]).output
        for path in ["./usr/lib/meetperry/bin/receiver", "./usr/lib/meetperry/pipeline.sh", "./lib/systemd/system/meetperry.service",
                     "./lib/systemd/system/meetperry.socket", "./lib/systemd/system/meetperry-receiver.service", "./etc/meetperry.env"] {
            #expect(contents.contains(path), "\(path) in the package")
        }
        let conffiles = try runTool("/bin/sh", ["-c", "dpkg-deb --ctrl-tarfile \"$0\" | tar -xO ./conffiles", deb]).output
        #expect(conffiles.contains("/etc/meetperry.env"), "the env files are conffiles: an upgrade keeps the operator's")

        let tree = try makeTemporaryDirectory("debroot")
        #expect(try runTool("/usr/bin/dpkg-deb", ["-x", deb, tree]).status == 0)
        let control = try makeTemporaryDirectory("debctl")
        #expect(try runTool("/usr/bin/dpkg-deb", ["-e", deb, control]).status == 0)
        let script = """
            set -u
            mount -t tmpfs -o size=1m tmpfs /opt/swift
            mount -t overlay overlay -o lowerdir=\(tree)/usr/lib:/usr/lib /usr/lib
            for unit in \(tree)/lib/systemd/system/*; do
                out=$(systemd-analyze verify "$unit" 2>&1); [ -z "$out" ] || { echo "unit $unit: $out"; exit 5; }
            done
            echo "units verified"
            for program in receiver applier reporter; do /usr/lib/meetperry/bin/$program --version || exit 4; done
            for maintainer in postinst prerm postrm; do sh -n \(control)/$maintainer || exit 6; done
            echo "maintainer scripts parse"
            """
        let run = try runTool("/bin/sh", ["-c", "exec /usr/bin/unshare -m --propagation private /bin/sh -c \"$0\"", script], timeout: 120)
        #expect(run.status == 0, "\(run.all)")
        #expect(run.output.contains("units verified") && run.output.contains("reporter 0.") && run.output.contains("maintainer scripts parse"), "\(run.all)")
        #expect(!FileManager.default.fileExists(atPath: "/usr/lib/meetperry"), "nothing landed outside the namespace")
    }
}
