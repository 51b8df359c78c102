import BnfoldCLI

BnfoldMain.main()
