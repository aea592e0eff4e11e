package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// testVersion is what the image tests stamp into the binaries.
const testVersion = "0.0.0-deploytest"

// The binaries deploy/build.sh makes (what the images copy), built once for
// every test of the package that runs them.
var built struct {
	once sync.Once
	dir  string
	err  error
	out  []byte
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// binaries runs deploy/build.sh as the Dockerfile's build stage does and
// returns the directory of the binaries, by name. A command not in this
// tree yet (cmd/headcount-sidecar comes with the router's restructuring) is
// left out with a NOTE, never silently.
func binaries(t *testing.T) map[string]string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	var missing []string
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "headcount-deploy-bin")
		if built.err != nil {
			return
		}
		args := []string{"deploy/build.sh", testVersion, built.dir}
		for _, pkg := range imagePackages {
			if _, err := os.Stat(filepath.Join("..", pkg)); err != nil {
				missing = append(missing, pkg)
				continue
			}
			args = append(args, pkg)
		}
		cmd := exec.Command("sh", args...)
		cmd.Dir = ".."
		built.out, built.err = cmd.CombinedOutput()
	})
	for _, pkg := range missing {
		t.Logf("NOTE: %s is not in this tree: its binary is NOT built or checked", pkg)
	}
	require.NoError(t, built.err, "%s", built.out)
	bins := map[string]string{}
	entries, err := os.ReadDir(built.dir)
	require.NoError(t, err)
	for _, e := range entries {
		bins[e.Name()] = filepath.Join(built.dir, e.Name())
	}
	return bins
}

// imagePackages are build.sh's default packages: the commands the images ship.
var imagePackages = func() []string {
	raw, err := os.ReadFile("build.sh")
	if err != nil {
		panic(err)
	}
	return regexp.MustCompile(`\./cmd/[a-z-]+`).FindAllString(string(raw), -1)
}()

// stage is one FROM of deploy/Dockerfile and its instructions,
// continuation lines joined.
type stage struct {
	name, from string
	lines      []string // the instructions after FROM
}

// image reports whether the stage is one of the images (it has an
// ENTRYPOINT), not the build or a base the images share.
func (s stage) image() bool {
	return slices.ContainsFunc(s.lines, func(l string) bool { return strings.HasPrefix(l, "ENTRYPOINT ") })
}

func parseDockerfile(t *testing.T) (args map[string]string, stages []stage) {
	t.Helper()
	f, err := os.Open("Dockerfile")
	require.NoError(t, err)
	defer f.Close()
	args = map[string]string{}
	sc := bufio.NewScanner(f)
	line := ""
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			line += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		l, line = line+l, ""
		word, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(word) {
		case "ARG":
			if k, v, ok := strings.Cut(rest, "="); ok && len(stages) == 0 {
				args[k] = v
			}
		case "FROM":
			fields := strings.Fields(rest)
			s := stage{from: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				s.name = fields[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, l)
		}
	}
	require.NoError(t, sc.Err())
	return args, stages
}

var digestPinned = regexp.MustCompile(`^[a-z0-9./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$`)

// The Dockerfile: every base pinned by digest, every image running as a
// non-root user, the sidecar image carrying the light sidecar binary, the
// version a required build argument passed to build.sh.
func TestDockerfile(t *testing.T) {
	args, stages := parseDockerfile(t)
	inherited := map[string]string{} // stage → its instructions after its base stage's
	images := map[string]string{}    // stage → entrypoint
	for _, s := range stages {
		base := s.from
		if strings.HasPrefix(base, "${") {
			base = args[strings.Trim(base, "${}")]
		}
		parent, onAStage := inherited[base]
		if !onAStage {
			assert.Regexp(t, digestPinned, base, "stage %s: base pinned by digest", s.name)
		}
		instructions := parent + "\n" + strings.Join(s.lines, "\n")
		inherited[s.name] = instructions
		if s.name == "build" {
			assert.Contains(t, instructions, `sh deploy/build.sh "$VERSION" /out`)
			assert.Contains(t, instructions, "${VERSION:?", "a build without VERSION fails")
			continue
		}
		if !s.image() {
			continue // a base of the images below, checked through them
		}
		user := regexp.MustCompile(`(?m)^USER (\d+)(:\d+)?$`).FindStringSubmatch(instructions)
		if assert.NotNil(t, user, "stage %s: a numeric USER (runAsNonRoot needs one)", s.name) {
			assert.NotEqual(t, "0", user[1], "stage %s: not root", s.name)
		}
		assert.Contains(t, instructions, "org.opencontainers.image.version=${VERSION}", s.name)
		entry := regexp.MustCompile(`(?m)^ENTRYPOINT \["(/[a-z-]+)"\]$`).FindStringSubmatch(instructions)
		require.NotNil(t, entry, "stage %s: an ENTRYPOINT", s.name)
		assert.Contains(t, instructions, "COPY --from=build /out"+entry[1]+" "+entry[1], "stage %s copies what it runs", s.name)
		images[s.name] = entry[1]
	}
	assert.Equal(t, map[string]string{"headcount": "/headcount", "sidecar": "/headcount-sidecar", "adapter": "/headcount-adapter"}, images)
	assert.Equal(t, "headcount", stages[len(stages)-1].name, "a build without --target gives the main image")
	for _, bin := range images {
		assert.Contains(t, imagePackages, "./cmd"+bin, "build.sh builds %s", bin)
	}
}

// .dockerignore keeps git history, the caches (the Kubernetes binaries in
// .cache/k8s) and built binaries out of the build context.
func TestDockerignore(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", ".dockerignore"))
	require.NoError(t, err)
	var patterns []string
	for l := range strings.Lines(string(raw)) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	for _, p := range []string{".git", ".cache", "bin"} {
		assert.Contains(t, patterns, p)
	}
	for _, p := range patterns {
		assert.False(t, strings.HasPrefix(p, "!"), "no re-inclusion: %s", p)
		for _, needed := range []string{"go.mod", "go.sum", "deploy", "cmd"} {
			assert.NotEqual(t, needed, strings.TrimSuffix(p, "/"), "the build needs %s", needed)
		}
	}
}

// The binaries build.sh makes say the version they were stamped with.
func TestImageBinariesCarryTheVersion(t *testing.T) {
	bins := binaries(t)
	require.Contains(t, bins, "headcount")
	for name, bin := range bins {
		out, err := exec.Command(bin, "--version").CombinedOutput()
		require.NoError(t, err, "%s --version: %s", name, out)
		assert.Contains(t, string(out), testVersion, name)
	}
}

// Nothing under deploy/ floats: images are referenced by a version (an
// image ":latest", a kustomize newTag or a chart tag "latest" fails).
func TestNoLatestTag(t *testing.T) {
	latest := regexp.MustCompile(`(?i)(:|tag:\s*)"?latest\b`)
	require.NoError(t, filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
			return err
		}
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		for i, l := range strings.Split(string(raw), "\n") {
			assert.False(t, latest.MatchString(l), "%s:%d: %s", path, i+1, l)
		}
		return nil
	}))
}

// task image builds every image target of the Dockerfile under the name the
// chart gives it, at the chart's appVersion by default (the overlays' tag
// too); task build runs build.sh, as the image's build stage does.
func TestImageTask(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "Taskfile.yml"))
	require.NoError(t, err)
	var tf struct {
		Tasks map[string]struct {
			Vars map[string]string
			Cmds []string
		}
	}
	require.NoError(t, yaml.Unmarshal(raw, &tf))
	chart, err := os.ReadFile(filepath.Join("chart", "Chart.yaml"))
	require.NoError(t, err)
	var meta struct{ AppVersion string }
	require.NoError(t, yaml.Unmarshal(chart, &meta))
	values, err := os.ReadFile(filepath.Join("chart", "values.yaml"))
	require.NoError(t, err)
	var v struct{ Image map[string]any }
	require.NoError(t, yaml.Unmarshal(values, &v))

	image := tf.Tasks["image"]
	assert.Contains(t, image.Vars["VERSION"], `default "`+meta.AppVersion+`"`, "the chart's appVersion by default")
	_, stages := parseDockerfile(t)
	chartName := map[string]string{"headcount": v.Image["headcount"].(string), "sidecar": v.Image["sidecar"].(string), "adapter": v.Image["adapter"].(string)}
	for _, s := range stages {
		if !s.image() {
			continue
		}
		want := "--build-arg VERSION={{.VERSION}} --target " + s.name + " -t {{.REGISTRY}}/" + chartName[s.name] + ":{{.VERSION}}"
		assert.True(t, slices.ContainsFunc(image.Cmds, func(c string) bool { return strings.Contains(c, want) }), "task image builds %s", want)
	}
	assert.Equal(t, []string{"sh deploy/build.sh {{.VERSION}} bin"}, tf.Tasks["build"].Cmds)

	// The overlays' images are the chart's version too.
	for _, k := range []string{filepath.Join("base", "kustomization.yaml"), filepath.Join("adapter", "kustomization.yaml")} {
		raw, err := os.ReadFile(k)
		require.NoError(t, err)
		var kust struct{ Images []struct{ NewTag string } }
		require.NoError(t, yaml.Unmarshal(raw, &kust))
		require.NotEmpty(t, kust.Images, k)
		for _, img := range kust.Images {
			assert.Equal(t, meta.AppVersion, img.NewTag, k)
		}
	}
}
