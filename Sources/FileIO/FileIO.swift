import CSystemShims
#if canImport(Glibc)
import Glibc
#endif

/// A failed system call on a named file, with its errno, so the message
/// says what was being done to which path and why it failed.
public struct SystemCallError: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var errno: Int32

    public init(operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}

/// Writes all of `bytes` to `fd`, retrying on EINTR, partial writes and
/// EAGAIN (a non-blocking descriptor inherited from the parent). Returns 0 on
/// success or the errno that stopped it.
///
/// On a non-blocking descriptor, `whileBlocked` is called about every 100 ms
/// while the reader is not taking data, so the caller can do its housekeeping.
public func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, whileBlocked: (() -> Void)? = nil) -> Int32 {
    guard var pointer = bytes.baseAddress else { return 0 }
    var remaining = bytes.count
    while remaining > 0 {
        let n = write(fd, pointer, remaining)
        if n > 0 {
            pointer += n
            remaining -= n
            continue
        }
        let error = n < 0 ? errno : EIO
        if error == EINTR { continue }
        if error == EAGAIN || error == EWOULDBLOCK {
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            if poll(&pfd, 1, 100) == 0 { whileBlocked?() }
            continue
        }
        return error
    }
    return 0
}

/// Flushes the whole file system holding `fd` (syncfs(2)): one call makes a
/// run's worth of files durable. Returns 0 or the errno.
public func syncFileSystem(_ fd: Int32) -> Int32 {
    meetperry_syncfs(fd) == 0 ? 0 : errno
}

/// Makes a directory's entries durable (a rename, a new or removed file in it): fsync(2) on the directory.
public func syncDirectory(_ path: String) throws(SystemCallError) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw SystemCallError(operation: "open", path: path, errno: errno) }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw SystemCallError(operation: "fsync", path: path, errno: errno) }
}
