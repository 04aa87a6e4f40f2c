import Testing

@Test("placeholder for LMCacheStorage") func placeholder() { #expect(1 + 1 == 2) }
