import Foundation
import Testing
import TestSupport
import WebhookModel
@testable import ReceiverCore
#if canImport(Glibc)
import Glibc
#endif

/// `sd_listen_fds(3)` read from values: what a supervisor hands over, and to whom.
@Suite struct SocketActivationParsingTests {
    @Test func oneSocketForThisProcessIsFdThree() throws {
        let activation = try SocketActivation.parse(environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "webhook"], pid: 4242)
        #expect(activation == SocketActivation(descriptor: 3, name: "webhook"))
        #expect(try SocketActivation.parse(environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "1"], pid: 4242)?.name == nil)
    }

    @Test func variablesMeantForAnotherProcessOrNoneHandNothingOver() throws {
        // Inherited from a parent that was activated itself: not for us.
        #expect(try SocketActivation.parse(environment: ["LISTEN_PID": "1", "LISTEN_FDS": "1"], pid: 4242) == nil)
        #expect(try SocketActivation.parse(environment: ["LISTEN_FDS": "1"], pid: 4242) == nil)
        #expect(try SocketActivation.parse(environment: [:], pid: 4242) == nil)
        #expect(try SocketActivation.parse(environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "0"], pid: 4242) == nil)
    }

    @Test func whatCannotBeUsedIsRefusedSayingWhy() {
        #expect(throws: SocketActivation.Invalid.malformed(variable: "LISTEN_PID", value: "me")) {
            try SocketActivation.parse(environment: ["LISTEN_PID": "me", "LISTEN_FDS": "1"], pid: 4242)
        }
        #expect(throws: SocketActivation.Invalid.malformed(variable: "LISTEN_FDS", value: "")) {
            try SocketActivation.parse(environment: ["LISTEN_PID": "4242"], pid: 4242)
        }
        #expect(throws: SocketActivation.Invalid.tooMany(2)) {
            try SocketActivation.parse(environment: ["LISTEN_PID": "4242", "LISTEN_FDS": "2"], pid: 4242)
        }
        #expect(SocketActivation.Invalid.tooMany(2).description.contains("one ListenStream="))
    }

    @Test func aListeningSocketIsAdoptedAndAnythingElseRefused() throws {
        let held = try HeldListeningSocket()
        #expect(try SocketActivation(descriptor: held.fd).adopt() == "127.0.0.1:\(held.port)")
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        #expect(throws: SocketActivation.Invalid.notListening(descriptor: fds[0], reason: "it is not a socket")) {
            try SocketActivation(descriptor: fds[0]).adopt()
        }
        let unbound = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(unbound) }
        #expect(throws: SocketActivation.Invalid.notListening(descriptor: unbound, reason: "it is not a listening stream socket (ListenStream=)")) {
            try SocketActivation(descriptor: unbound).adopt()
        }
    }
}

/// The real receiver given its listening socket the way systemd gives it
/// (fd 3, `LISTEN_FDS`, `LISTEN_PID`), restarted while senders keep sending.
@Suite(.serialized) struct SocketActivationProcessTests {
    /// What the senders saw.
    struct Outcome: Sendable {
        var accepted: [String] = []
        var refusedConnections = 0
        var otherStatuses: [Int] = []
        /// No answer on a connection that had served requests before (the keep-alive race a sender retries).
        var lostOnReusedConnection = 0
        /// No answer on a fresh connection: the receiver took it and dropped it.
        var lostOnFreshConnection: [String] = []
        var answeredAt: [Double] = []
    }

    @Test func aRestartUnderLoadRefusesNoConnectionAndEvery202IsInTheOutput() throws {
        let dir = try makeTemporaryDirectory("activation")
        let held = try HeldListeningSocket()
        // A port of its own in HTTP_PORT, which it must not bind: the handed-over socket wins.
        let ignoredPort = freePort()
        func start(_ generation: Int) throws -> ChildProcess {
            try held.activate(executable("receiver"), environment: ["HTTP_HOST": "127.0.0.1", "HTTP_PORT": String(ignoredPort)],
                              stdout: .file("\(dir)/out.\(generation)"), stderr: .appending("\(dir)/receiver.log"))
        }
        func log() -> String { (try? String(contentsOfFile: "\(dir)/receiver.log", encoding: .utf8)) ?? "" }
        var receiver = try start(0)
        try waitUntil("the first receiver answers on the held socket") {
            (try? httpRequest(port: held.port, "GET", "/healthz", headers: [:]))?.status == 200
        }
        #expect(throws: ConnectionRefused.self) { try HTTPConnection(port: ignoredPort) }
        // (The socket is served from the moment it is adopted; the line may come a moment later.)
        try waitUntil("the receiver says it serves the handed-over socket", timeout: 10) { log().contains("socket fd 3 from the supervisor") }

        let stop = Shared(false)
        let outcomes = Collected<Outcome>()
        let started = Date()
        let senders = Thread {
            onThreads(8) { sender in
                var outcome = Outcome()
                var connection: HTTPConnection?
                var servedOnConnection = 0
                var n = 0
                while !stop.value {
                    // Half the senders keep their connection; half open one per webhook.
                    if connection == nil || sender % 2 == 1 {
                        do {
                            connection = try HTTPConnection(port: held.port, timeoutSeconds: 20)
                            servedOnConnection = 0
                        } catch is ConnectionRefused {
                            outcome.refusedConnections += 1
                            connection = nil
                            usleep(10_000)
                            continue
                        } catch {
                            outcome.lostOnFreshConnection.append("connect: \(error)")
                            continue
                        }
                    }
                    let id = "s\(sender)-\(n)"
                    n += 1
                    do {
                        let result = try connection!.request(body: webhookJSON(id: id))
                        servedOnConnection += 1
                        if result.status == 202 {
                            outcome.accepted.append(id)
                            outcome.answeredAt.append(Date().timeIntervalSince(started))
                        } else {
                            outcome.otherStatuses.append(result.status)
                        }
                        if result.header("connection") == "close" { connection = nil }
                    } catch {
                        if servedOnConnection > 0 { outcome.lostOnReusedConnection += 1 } else { outcome.lostOnFreshConnection.append("\(id): \(error)") }
                        connection = nil
                    }
                }
                outcomes.append(outcome)
            }
        }
        senders.start()

        // Two restarts, each as systemd does one: SIGTERM, wait for the exit, start the next.
        var exits: [Int32] = []
        var restartSeconds: [Double] = []
        for generation in 1...2 {
            usleep(1_500_000)
            let begun = Date()
            receiver.signal(SIGTERM)
            exits.append(try receiver.waitForExit(timeout: 60))
            receiver = try start(generation)
            try waitUntil("receiver \(generation) answers") {
                (try? httpRequest(port: held.port, "GET", "/healthz", headers: [:]))?.status == 200
            }
            restartSeconds.append(Date().timeIntervalSince(begun))
        }
        usleep(1_500_000)
        stop.value = true
        try waitUntil("the senders stop", timeout: 60) { outcomes.all.count == 8 }
        receiver.signal(SIGTERM)
        exits.append(try receiver.waitForExit(timeout: 60))

        let all = outcomes.all
        let accepted = all.flatMap(\.accepted)
        var written: [String] = []
        for generation in 0...2 {
            let text = try String(contentsOfFile: "\(dir)/out.\(generation)", encoding: .utf8)
            written += try text.split(separator: "\n").map { try Webhook.decode(Array($0.utf8)).webhook.taskId }
        }
        let answeredAt = all.flatMap(\.answeredAt).sorted()
        let longestGap = zip(answeredAt, answeredAt.dropFirst()).map { $1 - $0 }.max() ?? 0
        let summary = "socket activation: \(accepted.count) webhooks answered 202 across 2 restarts (\(restartSeconds.map { String(format: "%.2f s", $0) }.joined(separator: ", ")) from SIGTERM to the next receiver's /healthz); refused connections \(all.map(\.refusedConnections).reduce(0, +)); other statuses \(all.flatMap(\.otherStatuses)); unanswered on reused connections \(all.map(\.lostOnReusedConnection).reduce(0, +)), on fresh ones \(all.flatMap(\.lostOnFreshConnection).count); longest gap between 202s \(String(format: "%.2f", longestGap)) s"
        print(summary)

        #expect(exits == [0, 0, 0], "\(log())")
        #expect(all.map(\.refusedConnections).reduce(0, +) == 0, "\(summary)")
        #expect(all.flatMap(\.lostOnFreshConnection).isEmpty, "\(all.flatMap(\.lostOnFreshConnection).prefix(5))")
        #expect(all.map(\.lostOnReusedConnection).reduce(0, +) == 0, "\(summary)\n\(log())")
        #expect(all.flatMap(\.otherStatuses).isEmpty, "\(summary)")
        #expect(accepted.count > 200, "\(summary)")
        // Every 202 is in the output of one of the three receivers, once.
        #expect(Set(written) == Set(accepted))
        #expect(written.count == accepted.count)
    }

    @Test func aDescriptorThatIsNotAListeningSocketIsABadSettingNamedAsSuch() throws {
        let dir = try makeTemporaryDirectory("activation")
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        let child = try ChildProcess("/bin/sh", arguments: ["-c", #"LISTEN_PID=$$ exec "$0""#, executable("receiver")],
                                     environment: ["LISTEN_FDS": "1", "HTTP_PORT": String(freePort())],
                                     stdout: .null, stderr: .file("\(dir)/err"), inheriting: [fds[0]])
        #expect(try child.waitForExit(timeout: 30) == 64)
        let stderr = try String(contentsOfFile: "\(dir)/err", encoding: .utf8)
        #expect(stderr.contains("socket activation: fd 3 (LISTEN_FDS) cannot be served: it is not a socket"), "\(stderr)")
    }
}
