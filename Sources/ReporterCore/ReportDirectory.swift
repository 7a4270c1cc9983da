import FileIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The directory reports go to. Every file is written under a temporary name
/// in the same directory and renamed into place, so a reader (or a crash)
/// never sees half a report; `sync()` makes the whole run durable at once
/// before the run is recorded.
public final class ReportDirectory {
    public let path: String
    private let fd: Int32
    private var counter = 0
    private static let temporaryPrefix = ".task_report.tmp-"

    /// Creates the directory if it is missing and checks that files can be made in it.
    public init(path: String) throws {
        self.path = path
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw SystemCallError(operation: "cannot create the report directory", path: path, errno: (error as NSError).code == 0 ? EACCES : Int32((error as NSError).code))
        }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError(operation: "cannot open the report directory", path: path, errno: errno) }
        self.fd = fd
        guard faccessat(fd, ".", W_OK, AT_EACCESS) == 0 else {
            let e = errno
            close(fd)
            throw SystemCallError(operation: "the report directory is not writable", path: path, errno: e)
        }
    }

    deinit { close(fd) }

    /// Removes temporary files a killed run left behind. Call while holding the run lock.
    public func removeLeftovers() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return }
        for name in names where name.hasPrefix(Self.temporaryPrefix) {
            unlinkat(fd, name, 0)
        }
    }

    /// Writes `bytes` as `name` atomically (temporary file, then rename).
    public func write(name: String, bytes: [UInt8]) throws {
        precondition(!name.utf8.contains(UInt8(ascii: "/")) && name != "." && name != "..", "report names never hold a path")
        counter += 1
        let temporary = "\(Self.temporaryPrefix)\(getpid())-\(counter).json"
        let file = openat(fd, temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard file >= 0 else { throw SystemCallError(operation: "cannot create a file in", path: path, errno: errno) }
        var failure = bytes.withUnsafeBytes { writeFully(file, $0) }
        if close(file) != 0 && failure == 0 { failure = errno }
        if failure == 0 && renameat(fd, temporary, fd, name) != 0 { failure = errno }
        if failure != 0 {
            unlinkat(fd, temporary, 0)
            throw SystemCallError(operation: "cannot write \(name) in", path: path, errno: failure)
        }
    }

    /// Makes every file written so far, and their names, durable.
    public func sync() throws {
        let failure = syncFileSystem(fd)
        guard failure == 0, fsync(fd) == 0 else {
            throw SystemCallError(operation: "cannot sync", path: path, errno: failure != 0 ? failure : errno)
        }
    }
}
