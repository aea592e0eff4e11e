package local_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// TestLivePageFollowsUpInChromium opens up's live page in headless Chromium
// and watches the followers, the figures and the chart follow the fleet as
// streams open (1 → 3 followers) and close (→ 1). With
// HEADCOUNT_LIVEPAGE_SCREENSHOT=<file.png> it saves what the page showed at
// the peak (docs/livepage.png was made so).
func TestLivePageFollowsUpInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system and a browser")
	}
	browser, err := exec.LookPath("chromium")
	if err != nil {
		msg := "SKIPPED: Debian's chromium is not installed (apt-get install -y chromium; .ci/run does): the live page is untested"
		if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	up := e2e.StartUp(t, e2e.Binary(t), "--target", "5", "--instance-ttl", "1s", "--scale-down-window", "2s", "--drain-timeout", "5s")

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 1100))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, stop := context.WithTimeout(ctx, 4*time.Minute)
	defer stop()
	_, err = chromedp.Run(ctx, chromedp.Navigate("http://"+up.Control+"/live"))
	require.NoError(t, err)

	type page struct {
		Followers int    `json:"followers"`
		Live      string `json:"live"`
		Target    string `json:"target"`
		Points    int    `json:"points"`
		Chart     string `json:"chart"`
		Notes     string `json:"notes"`
		Conn      string `json:"conn"`
	}
	var seen page
	read := func() page {
		p, err := chromedp.Run(ctx, chromedp.Evaluate[page](`({
			followers: [...document.querySelectorAll('#followers tbody tr')].filter(r => r.cells[1].textContent === 'follower' && r.cells[2].textContent === 'ready').length,
			live: document.getElementById('live').textContent,
			target: document.getElementById('target').textContent,
			points: (document.getElementById('line-live').getAttribute('points') || '').split(' ').filter(Boolean).length,
			chart: document.getElementById('chart-desc').textContent,
			notes: document.getElementById('notes').textContent,
			conn: document.getElementById('conn').textContent,
		})`))
		require.NoError(t, err)
		seen = p
		return p
	}
	await := func(within time.Duration, what string, cond func(page) bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond(read()) {
			if time.Now().After(deadline) {
				t.Fatalf("the page never showed %s within %v: %+v", what, within, seen)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	await(time.Minute, "one ready follower", func(p page) bool {
		return p.Followers == 1 && p.Live == "0" && strings.HasPrefix(p.Target, "1 ") && strings.HasPrefix(p.Conn, "Live")
	})
	before := seen.Points

	streams := openDemoStreams(t, up.Control, up.Streaming, 12)
	await(90*time.Second, "12 live instances on three ready followers", func(p page) bool {
		return p.Live == "12" && strings.HasPrefix(p.Target, "3 ") && p.Followers == 3 &&
			strings.Contains(p.Chart, "peak live 12") && strings.Contains(p.Notes, "replica target 1 → 3")
	})
	require.Greater(t, seen.Points, before, "the chart grew")
	if path := os.Getenv("HEADCOUNT_LIVEPAGE_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, png, 0o644))
	}

	for _, s := range streams {
		s.Close()
	}
	await(90*time.Second, "the fleet back to one follower", func(p page) bool {
		return p.Live == "0" && p.Followers == 1 && strings.HasPrefix(p.Target, "1 ") &&
			strings.Contains(p.Notes, "replica target 3 → 1") && strings.Contains(p.Notes, "left")
	})

	// Keyboard: the first Tab reaches the skip link, the next ones the followers, the chart and the notes.
	var focused []string
	for range 4 {
		_, err := chromedp.Run(ctx, chromedp.KeyEvent("\t"))
		require.NoError(t, err)
		id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.id || document.activeElement.getAttribute('href')`))
		require.NoError(t, err)
		focused = append(focused, id)
	}
	require.Equal(t, []string{"#followers", "followers", "chart", "notes"}, focused)
	up.Stop(t, 30*time.Second)
}
