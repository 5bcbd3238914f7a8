# Build Camelid's Windows installer: PyInstaller bundle, self-test, Inno Setup.
# Run from the repository root in PowerShell:
#   installers\windows\build.ps1              (CPU build)
#   installers\windows\build.ps1 -Variant cuda (needs the CUDA toolkit; builds llama-cpp-python with CUDA)
param([ValidateSet("cpu", "cuda", "vulkan")][string]$Variant = "cpu")
$ErrorActionPreference = "Stop"

if (-not (Test-Path .venv)) { py -3 -m venv .venv }
$py = ".venv\Scripts\python.exe"
& $py -m pip install --upgrade pip
# The portable build (runtime CPU dispatch, RPC) plus the GPU backend, built once per
# flag set into .cache\wheels (scripts/llama_build.py).
& $py scripts\llama_build.py --python $py --backend $Variant --build portable
if ($LASTEXITCODE -ne 0) { throw "The llama-cpp-python build failed" }
& $py -m pip install -e ".[packaging]"
& $py scripts\fetch_starter.py --dest .cache\models\SmolLM2-135M-Instruct.Q4_1.gguf
& $py installers\make_icons.py --out build\icons
& $py -m PyInstaller --noconfirm --log-level WARN --distpath build\dist --workpath build\work installers\camelid.spec
if ($LASTEXITCODE -ne 0) { throw "PyInstaller failed" }

$env:CAMELID_HOME = Join-Path $env:TEMP "camelid-selftest"
$env:QT_QPA_PLATFORM = "offscreen"
& build\dist\Camelid\camelid.exe --self-test
if ($LASTEXITCODE -ne 0) { throw "The frozen app's self-test failed" }
Remove-Item Env:\CAMELID_HOME, Env:\QT_QPA_PLATFORM

$version = & $py -c "import app; print(app.__version__)"
$iscc = "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe"
if (-not (Test-Path $iscc)) { throw "Inno Setup 6 is not installed: get it from https://jrsoftware.org/isdl.php" }
& $iscc "/DAppVersion=$version" "/DVariant=$Variant" installers\windows\camelid.iss
if ($LASTEXITCODE -ne 0) { throw "Inno Setup failed" }
Get-ChildItem dist\*.exe | ForEach-Object { "{0}  {1:N0} MB" -f $_.Name, ($_.Length / 1MB) }
