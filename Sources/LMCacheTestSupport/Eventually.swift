/// Polls `condition` every `interval` until it holds or `timeout` passes; returns whether it held.
package func eventually(
    timeout: Duration = .seconds(15),
    interval: Duration = .milliseconds(20),
    _ condition: () async -> Bool
) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return await condition()
}
