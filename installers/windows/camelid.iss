; Inno Setup script for Camelid (built by installers/windows/build.ps1).
; The one-folder PyInstaller bundle is in build\dist\Camelid.
#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef Variant
  #define Variant "cpu"
#endif

[Setup]
AppId={{6A3C1F0E-8B1D-4C57-9C3E-CA3E11D0A001}
AppName=Camelid
AppVersion={#AppVersion}
AppPublisher=Camelid developers
DefaultDirName={autopf}\Camelid
DefaultGroupName=Camelid
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
OutputDir=..\..\dist
OutputBaseFilename=Camelid-{#AppVersion}-windows-{#Variant}-setup
SetupIconFile=..\..\build\icons\camelid.ico
UninstallDisplayIcon={app}\camelid.exe
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible

[Files]
Source: "..\..\build\dist\Camelid\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Camelid"; Filename: "{app}\camelid.exe"
Name: "{group}\Uninstall Camelid"; Filename: "{uninstallexe}"
Name: "{autodesktop}\Camelid"; Filename: "{app}\camelid.exe"; Tasks: desktopicon

[Tasks]
Name: "desktopicon"; Description: "Create a desktop shortcut"; Flags: unchecked

[Run]
Filename: "{app}\camelid.exe"; Description: "Start Camelid"; Flags: nowait postinstall skipifsilent

[Code]
// Models are large and slow to download again: the uninstaller asks before
// deleting them, and separately before deleting chats and settings.
// Camelid keeps its data under %LOCALAPPDATA%\Camelid (platformdirs).
procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  DataDir: String;
begin
  if CurUninstallStep = usPostUninstall then
  begin
    DataDir := ExpandConstant('{localappdata}\Camelid');
    if DirExists(DataDir + '\models') then
      if MsgBox('Also delete your downloaded models (' + DataDir + '\models)?' + #13#10 +
                'Choose No to keep them for a later install.', mbConfirmation, MB_YESNO or MB_DEFBUTTON2) = IDYES then
        DelTree(DataDir + '\models', True, True, True);
    if DirExists(DataDir) then
      if MsgBox('Also delete your conversations and settings?', mbConfirmation, MB_YESNO or MB_DEFBUTTON2) = IDYES then
      begin
        DeleteFile(DataDir + '\chats.sqlite3');
        DeleteFile(DataDir + '\chats.sqlite3-wal');
        DeleteFile(DataDir + '\chats.sqlite3-shm');
        DeleteFile(DataDir + '\settings.json');
        DelTree(DataDir + '\Logs', True, True, True);
        DelTree(DataDir + '\Cache', True, True, True);
        RemoveDir(DataDir);
      end;
  end;
end;
