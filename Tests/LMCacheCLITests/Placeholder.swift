import Testing

@Test("placeholder for LMCacheCLI") func placeholder() { #expect(1 + 1 == 2) }
