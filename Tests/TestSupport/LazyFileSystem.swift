import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A mount of `Tests/Tools/lazyfs.py`: a file system that forgets every
/// write, create, rename or unlink not yet fsynced when `powerCut()` is
/// called, as a disk does when the power goes with its page cache unwritten.
/// Kill the programs using it first; `powerCut()` undoes what was not
/// durable, unmounts, and mounts again over what the "disk" kept.
public final class LazyFileSystem: @unchecked Sendable {
    public let mountPoint: String
    private let backing: String
    private let logPath: String
    private var process: ChildProcess?

    /// Whether this machine can run it: `/dev/fuse`, root, Debian's python3-fusepy.
    public static var unavailableReason: String? {
        guard FileManager.default.fileExists(atPath: "/dev/fuse") else { return "/dev/fuse is missing" }
        guard getuid() == 0 else { return "mounting a FUSE file system for tests needs root" }
        guard FileManager.default.fileExists(atPath: "/usr/lib/python3/dist-packages/fusepy.py") else {
            return "python3-fusepy is not installed (apt-get install fuse3 python3-fusepy; .ci/run does)"
        }
        return nil
    }

    public init() throws {
        let dir = try makeTemporaryDirectory("lazyfs")
        backing = dir + "/disk"
        mountPoint = dir + "/mnt"
        logPath = dir + "/lazyfs.log"
        try FileManager.default.createDirectory(atPath: backing, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        // Unmount when the test process goes away, however that happens.
        let watchdog = "while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; fusermount -u -z \(mountPoint) || umount -l \(mountPoint)"
        try ChildProcess("/bin/sh", arguments: ["-c", "setsid sh -c '\(watchdog)' >/dev/null 2>&1 &"], stdout: .null).waitForExit()
        try mount()
    }

    deinit { unmount() }

    private func mount() throws {
        process = try ChildProcess("/usr/bin/python3", arguments: [packageRoot() + "/Tests/Tools/lazyfs.py", backing, mountPoint],
                                   stdout: .null, stderr: .appending(logPath))
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8))?.contains(" \(mountPoint) fuse") == true { return }
            guard process?.isRunning == true else { throw TestFailure("lazyfs did not mount: \(log)") }
            usleep(50_000)
        }
        throw TestFailure("lazyfs did not mount within 20 s: \(log)")
    }

    private func unmount() {
        guard let process else { return }
        _ = try? runTool("/usr/bin/fusermount", ["-u", "-z", mountPoint], timeout: 30)
        if (try? process.waitForExit(timeout: 10)) == nil {
            process.signal(SIGKILL)
            _ = try? process.waitForExit(timeout: 10)
        }
        self.process = nil
    }

    /// Counts so far: `fsyncs=N fsyncdirs=N undone=N pending=N`.
    public var status: String {
        (try? String(contentsOfFile: mountPoint + "/.lazyfs", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    /// Everything written so far becomes durable, as the kernel's writeback
    /// makes it within half a minute: what a test set up before its load.
    public func writeBack() throws {
        try command("sync")
    }

    private func command(_ text: String) throws {
        let fd = open(mountPoint + "/.lazyfs", O_WRONLY)
        guard fd >= 0 else { throw TestFailure("cannot open the lazyfs control file: \(String(cString: strerror(errno)))") }
        let line = text + "\n"
        let written = line.withCString { write(fd, $0, line.utf8.count) }
        close(fd)
        guard written == line.utf8.count else { throw TestFailure("lazyfs refused \(text): \(log)") }
    }

    /// The power goes and comes back: what was not durable is undone, the
    /// file system unmounted and mounted again. Returns the counts before the cut.
    @discardableResult
    public func powerCut() throws -> String {
        let before = status
        try command("powercut")
        unmount()
        try mount()
        return before
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}
