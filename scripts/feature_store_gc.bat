@echo off
rem Run `jules-cache gc` from Windows Task Scheduler, with a JSON and a text log per run.
rem
rem   schtasks /Create /TN "jules-cache gc" /SC DAILY /ST 03:17 /TR "C:\jules_cache\scripts\feature_store_gc.bat"
rem
rem Set FEATURE_STORE_PATH (and optionally the others) as system environment variables:
rem   FEATURE_STORE_PATH                 cache root (required)
rem   FEATURE_STORE_GC_RETENTION_WEEKS   delete entries not accessed for N weeks (default 4)
rem   FEATURE_STORE_GC_DRY_RUN           1: delete nothing, log what would go (default 0)
rem   FEATURE_STORE_LOG_DIR              where logs go (default %FEATURE_STORE_PATH%\gc-logs);
rem                                      logs older than 30 days are deleted
rem Overlapping runs: jules-cache takes its own GC lock; a second run exits 75 ("busy").
rem Exit code: that of jules-cache gc (0 done, 1 failed, 75 busy).
setlocal

if "%FEATURE_STORE_PATH%"=="" (
    echo feature_store_gc: set FEATURE_STORE_PATH to the cache root 1>&2
    exit /b 1
)
if "%FEATURE_STORE_GC_RETENTION_WEEKS%"=="" set "FEATURE_STORE_GC_RETENTION_WEEKS=4"
if "%FEATURE_STORE_LOG_DIR%"=="" set "FEATURE_STORE_LOG_DIR=%FEATURE_STORE_PATH%\gc-logs"
if not exist "%FEATURE_STORE_LOG_DIR%" mkdir "%FEATURE_STORE_LOG_DIR%"

set "DRY="
if "%FEATURE_STORE_GC_DRY_RUN%"=="1" set "DRY=--dry-run"
if /i "%FEATURE_STORE_GC_DRY_RUN%"=="true" set "DRY=--dry-run"

rem A sortable, unique-enough stamp: yyyyMMddTHHmmss from PowerShell.
for /f %%i in ('powershell -NoProfile -Command "Get-Date -Format yyyyMMddTHHmmss"') do set "STAMP=%%i"
set "JSON_LOG=%FEATURE_STORE_LOG_DIR%\gc-%STAMP%.json"
set "TEXT_LOG=%FEATURE_STORE_LOG_DIR%\gc-%STAMP%.log"

forfiles /p "%FEATURE_STORE_LOG_DIR%" /m gc-*.* /d -30 /c "cmd /c del @path" 2>nul

echo %DATE% %TIME% start: jules-cache gc --root "%FEATURE_STORE_PATH%" --retention-weeks %FEATURE_STORE_GC_RETENTION_WEEKS% %DRY% >> "%TEXT_LOG%"
jules-cache gc --root "%FEATURE_STORE_PATH%" --retention-weeks %FEATURE_STORE_GC_RETENTION_WEEKS% --json %DRY% > "%JSON_LOG%" 2>> "%TEXT_LOG%"
set "STATUS=%ERRORLEVEL%"
echo %DATE% %TIME% exit status %STATUS% (0 done, 1 failed, 75 busy); report: %JSON_LOG% >> "%TEXT_LOG%"
exit /b %STATUS%
