import Foundation
import Testing
import TestSupport

/// What operators run beside the programs: the Prometheus alert rules
/// (`deploy/prometheus`), loaded and unit-tested by promtool itself.
@Suite struct AlertRuleTests {
    let rules = packageRoot() + "/deploy/prometheus"

    @Test func theRulesLoad() throws {
        let check = try runTool(try systemTool("promtool", package: "Debian's prometheus"), ["check", "rules", rules + "/alerts.yml"])
        #expect(check.status == 0, "\(check.all)")
        #expect(check.all.contains("SUCCESS: 8 rules found"), "\(check.all)")
    }

    /// alerts.test.yml: applier lag, an accepted webhook rejected, the receiver's 503 rate, the
    /// reporter failing for three intervals, never succeeding or not running, a program down.
    @Test func theRulesFireWhenTheyShouldAndOnlyThen() throws {
        let test = try runTool(try systemTool("promtool", package: "Debian's prometheus"), ["test", "rules", rules + "/alerts.test.yml"])
        #expect(test.status == 0, "\(test.all)")
    }
}
