from dreamcanvas.cli import main

main()
